"""Block kernels of the selected core: digests equal xxhash's, zero flags, compare, holes."""
from __future__ import annotations

import os

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from labmig import _purecopy as twin
from labmig import core
from labmig.errors import InvalidInput

SEEDS = st.integers(0, 2**64 - 1)
BLOCKS = st.sampled_from([4096, 8192, 65536])


def xxh_rows(data: bytes, bs: int, seed: int) -> list[tuple[int, int]]:
    rows = []
    for i in range(0, len(data), bs):
        h = xxhash.xxh3_128_intdigest(data[i:i + bs], seed)
        rows.append((h & (2**64 - 1), h >> 64))
    return rows


@st.composite
def images(draw, max_blocks=6):
    """Bytes made of zero blocks, random blocks and a ragged tail."""
    bs = draw(BLOCKS)
    parts = []
    for _ in range(draw(st.integers(0, max_blocks))):
        kind = draw(st.sampled_from(["zero", "rand", "one-byte"]))
        if kind == "zero":
            parts.append(bytes(bs))
        elif kind == "rand":
            parts.append(draw(st.binary(min_size=16, max_size=16)) * (bs // 16))
        else:
            b = bytearray(bs)
            b[draw(st.integers(0, bs - 1))] = draw(st.integers(1, 255))
            parts.append(bytes(b))
    tail = draw(st.integers(0, bs - 1))
    parts.append(bytes(tail) if draw(st.booleans()) else os.urandom(tail))
    return b"".join(parts), bs


@settings(max_examples=150, deadline=None)
@given(images(), SEEDS)
def test_digest_buffer_equals_xxhash_and_twin(img, seed):
    data, bs = img
    n = (len(data) + bs - 1) // bs
    dig, zero = np.zeros((n, 2), np.uint64), core.new_bitmap(n)
    assert core.digest_buffer(data, bs, seed, dig, zero) == n
    assert [tuple(int(x) for x in r) for r in dig] == xxh_rows(data, bs, seed)
    zeros_ref = [i for i in range(n) if not any(data[i * bs:(i + 1) * bs])]
    assert [i for i in range(n) if int(zero[i >> 6]) >> (i & 63) & 1] == zeros_ref
    tdig, tzero = np.zeros((n, 2), np.uint64), twin.new_bitmap(n)
    twin.digest_buffer(data, bs, seed, tdig, tzero)
    assert (tdig == dig).all() and (tzero == zero).all()


@settings(max_examples=100, deadline=None)
@given(images(max_blocks=40), SEEDS, st.data())
def test_digest_file_of_a_range(tmp_path_factory, img, seed, data):
    blob, bs = img
    path = tmp_path_factory.mktemp("d") / "img"
    path.write_bytes(blob)
    first = data.draw(st.integers(0, max(len(blob) // bs, 0)))
    length = data.draw(st.integers(0, len(blob) + 3 * bs))
    offset = first * bs
    n = (length + bs - 1) // bs
    dig, zero = np.zeros((n, 2), np.uint64), core.new_bitmap(n)
    fd = os.open(path, os.O_RDONLY)
    try:
        got = core.digest_file(fd, offset, length, bs, seed, dig, zero, threads=2)
    finally:
        os.close(fd)
    there = blob[offset:offset + length]
    assert got == len(there)
    m = (len(there) + bs - 1) // bs
    assert [tuple(int(x) for x in r) for r in dig[:m]] == xxh_rows(there, bs, seed)
    assert not dig[m:].any()  # blocks past EOF are left untouched


def test_digest_file_uses_large_ranges_and_both_threads(tmp_path):
    bs = 4096
    blob = bytearray(os.urandom(3 << 20))
    blob[1 << 20:2 << 20] = bytes(1 << 20)
    (tmp_path / "img").write_bytes(blob)
    n = len(blob) // bs
    dig, zero = np.zeros((n, 2), np.uint64), core.new_bitmap(n)
    fd = os.open(tmp_path / "img", os.O_RDONLY)
    try:
        assert core.digest_file(fd, 0, len(blob), bs, 99, dig, zero) == len(blob)
    finally:
        os.close(fd)
    assert [tuple(int(x) for x in r) for r in dig] == xxh_rows(bytes(blob), bs, 99)
    assert core.popcount(zero, n) == 256


def test_zero_digest():
    lo, hi = core.zero_digest(65536, 5)
    h = xxhash.xxh3_128_intdigest(bytes(65536), 5)
    assert (lo, hi) == (h & (2**64 - 1), h >> 64)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.data())
def test_compare_digests(n, data):
    a = np.frombuffer(data.draw(st.binary(min_size=16 * n, max_size=16 * n)), "<u8").astype(np.uint64).reshape(n, 2)
    b = a.copy()
    flips = data.draw(st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, 1)), max_size=20)) if n else []
    for i, w in flips:
        b[i, w] ^= np.uint64(1 << 40)
    changed = core.new_bitmap(n)
    expected = [i for i in range(n) if a[i].tobytes() != b[i].tobytes()]
    assert core.compare_digests(a, b, changed) == len(expected)
    assert [i for i in range(n) if int(changed[i >> 6]) >> (i & 63) & 1] == expected


def test_punch_hole_keeps_size_and_reads_zero(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(os.urandom(1 << 20))
    fd = os.open(p, os.O_RDWR)
    try:
        ok = core.punch_hole(fd, 65536, 131072)
    finally:
        os.close(fd)
    data = p.read_bytes()
    assert len(data) == 1 << 20
    if ok:
        assert data[65536:196608] == bytes(131072)


@pytest.mark.parametrize("bs", [0, 1000, 2048, 4095, 3 * 4096, 32 << 20])
def test_bad_block_size(bs):
    with pytest.raises(InvalidInput, match="power of two"):
        core.digest_buffer(b"x" * 10, bs, 1, np.zeros((10, 2), np.uint64))


def test_bad_digest_arrays_and_seed():
    with pytest.raises(InvalidInput):
        core.digest_buffer(b"x" * 10000, 4096, 1, np.zeros((2, 2), np.uint64))  # 3 needed
    with pytest.raises(InvalidInput):
        core.digest_buffer(b"x", 4096, 1, np.zeros((1, 2), np.int64))
    with pytest.raises(InvalidInput):
        core.digest_buffer(b"x", 4096, -1, np.zeros((1, 2), np.uint64))
    with pytest.raises(InvalidInput):
        core.compare_digests(np.zeros((2, 2), np.uint64), np.zeros((3, 2), np.uint64), core.new_bitmap(3))


def test_read_error_is_an_oserror(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY)  # a directory: pread fails with EISDIR
    try:
        with pytest.raises(OSError):
            core.digest_file(fd, 0, 8192, 4096, 1, np.zeros((2, 2), np.uint64))
    finally:
        os.close(fd)
