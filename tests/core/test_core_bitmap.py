"""Bitmap kernels of the selected core against the pure twin and a plain-Python reference."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labmig import _purecopy as twin
from labmig import core
from labmig.errors import InvalidInput


def test_compiled_core_is_used_unless_pure_is_forced():
    if os.environ.get("LABMIG_PUREPYTHON", "") not in ("", "0"):
        assert core.IMPLEMENTATION == "pure"
    else:
        assert core.IMPLEMENTATION == "compiled", "the compiled core did not import: run pip install -e ."


@st.composite
def bitmaps(draw):
    """A bitmap with junk past nbits, its nbits, and the reference set of bits below nbits."""
    nbits = draw(st.integers(0, 700))
    extra_words = draw(st.integers(0, 2))
    nwords = (nbits + 63) // 64 + extra_words
    kind = draw(st.sampled_from(["sparse", "dense", "runs", "random"]))
    words = np.zeros(nwords, dtype=np.uint64)
    if nwords:
        if kind == "random":
            words[:] = np.frombuffer(draw(st.binary(min_size=8 * nwords, max_size=8 * nwords)), dtype="<u8")
        else:
            positions = draw(st.lists(st.integers(0, 64 * nwords - 1), max_size=60))
            for p in positions:
                if kind == "runs":
                    for q in range(p, min(p + draw(st.integers(1, 150)), 64 * nwords)):
                        words[q >> 6] |= np.uint64(1 << (q & 63))
                else:
                    words[p >> 6] |= np.uint64(1 << (p & 63))
            if kind == "dense":
                words = ~words
    ref = [i for i in range(nbits) if int(words[i >> 6]) >> (i & 63) & 1]
    return words, nbits, ref


def ref_runs(ref):
    runs = []
    for i in ref:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, 1])
    return [tuple(r) for r in runs]


@settings(max_examples=400, deadline=None)
@given(bitmaps())
def test_popcount(bm):
    words, nbits, ref = bm
    assert core.popcount(words, nbits) == twin.popcount(words, nbits) == len(ref)


@settings(max_examples=400, deadline=None)
@given(bitmaps(), st.integers(0, 800), st.integers(1, 50), st.sampled_from([np.int64, np.uint64]))
def test_find_set_bits_walk_in_chunks(bm, start, chunk, dtype):
    words, nbits, ref = bm
    expected = [i for i in ref if i >= start]
    got, pos, calls = [], start, 0
    while True:
        out = np.full(chunk, -1 if dtype == np.int64 else 2**64 - 1, dtype=dtype)
        count, nxt = core.find_set_bits(words, nbits, pos, out)
        t_out = np.zeros(chunk, dtype=dtype)
        assert twin.find_set_bits(words, nbits, pos, t_out) == (count, nxt)
        assert (t_out[:count] == out[:count]).all()
        got += [int(x) for x in out[:count]]
        calls += 1
        if nxt >= nbits:
            assert nxt == nbits
            break
        assert count == chunk and nxt in ref and nxt > (got[-1] if got else -1)
        pos = nxt
    assert got == expected
    assert calls <= len(expected) // chunk + 2


@settings(max_examples=400, deadline=None)
@given(bitmaps(), st.integers(0, 800), st.integers(1, 12))
def test_bit_runs_walk_in_chunks(bm, start, chunk):
    words, nbits, ref = bm
    expected = ref_runs([i for i in ref if i >= start])
    got, pos = [], start
    while True:
        s = np.zeros(chunk, dtype=np.int64)
        ln = np.zeros(chunk, dtype=np.uint64)
        count, nxt = core.bit_runs(words, nbits, pos, s, ln)
        ts, tl = np.zeros(chunk, dtype=np.int64), np.zeros(chunk, dtype=np.int64)
        assert twin.bit_runs(words, nbits, pos, ts, tl) == (count, nxt)
        assert (ts[:count] == s[:count]).all() and (tl[:count] == ln[:count].astype(np.int64)).all()
        got += [(int(a), int(b)) for a, b in zip(s[:count], ln[:count])]
        if nxt >= nbits:
            break
        assert count == chunk
        pos = nxt
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(bitmaps())
def test_fetch_and_clear(bm):
    words, nbits, _ = bm
    all_bits = sum(bin(int(w)).count("1") for w in words)
    a, out = words.copy(), np.zeros_like(words)
    assert core.fetch_and_clear(a, out) == all_bits
    assert (out == words).all() and not a.any()


@settings(max_examples=300, deadline=None)
@given(bitmaps(), st.binary(min_size=0, max_size=8 * 14))
def test_or_andnot(bm, other_bytes):
    words = bm[0]
    other = np.frombuffer(other_bytes.ljust(8 * len(words), b"\0")[: 8 * len(words)], dtype="<u8").astype(np.uint64)
    d = words.copy()
    core.bitmap_or(d, other)
    assert [int(x) for x in d] == [int(a) | int(b) for a, b in zip(words, other)]
    d = words.copy()
    core.bitmap_andnot(d, other)
    assert [int(x) for x in d] == [int(a) & ~int(b) & (2**64 - 1) for a, b in zip(words, other)]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 600), st.data())
def test_set_bits(nbits, data):
    idx = data.draw(st.lists(st.integers(0, nbits - 1), max_size=80))
    dtype = data.draw(st.sampled_from([np.int64, np.uint64]))
    a = core.new_bitmap(nbits)
    core.set_bits(a, np.asarray(idx, dtype=dtype))
    assert [i for i in range(64 * len(a)) if int(a[i >> 6]) >> (i & 63) & 1] == sorted(set(idx))


def test_new_bitmap_lengths():
    assert [len(core.new_bitmap(n)) for n in (0, 1, 64, 65, 2**20)] == [0, 1, 1, 2, 2**14]
    assert core.new_bitmap(100).dtype == np.uint64


def test_walk_of_a_large_map_in_chunks():
    nbits = 2**24 + 13
    rng = np.random.default_rng(7)
    idx = np.unique(rng.integers(0, nbits, 50_000)).astype(np.int64)
    a = core.new_bitmap(nbits)
    core.set_bits(a, idx)
    out, pos, found = np.empty(4096, np.int64), 0, []
    while pos < nbits:
        n, pos = core.find_set_bits(a, nbits, pos, out)
        found.append(out[:n].copy())
    assert (np.concatenate(found) == idx).all()
    assert core.popcount(a, nbits) == len(idx)


@pytest.mark.parametrize("call", [
    lambda: core.popcount(np.zeros(2, np.int64), 10),
    lambda: core.popcount(np.zeros(2, np.uint64), 129),
    lambda: core.popcount(np.zeros((2, 2), np.uint64), 1),
    lambda: core.find_set_bits(np.zeros(2, np.uint64), 64, 0, np.zeros(3, np.int32)),
    lambda: core.find_set_bits(np.zeros(4, np.uint64)[::2], 64, 0, np.zeros(3, np.int64)),
    lambda: core.bitmap_or(np.zeros(2, np.uint64), np.zeros(3, np.uint64)),
    lambda: core.set_bits(np.zeros(2, np.uint64), np.array([128], np.int64)),
    lambda: core.set_bits(np.zeros(2, np.uint64), np.array([-1], np.int64)),
    lambda: core.new_bitmap(-1),
])
def test_bad_calls_raise_invalid_input_with_hint(call):
    with pytest.raises(InvalidInput) as info:
        call()
    assert info.value.hint


def test_read_only_bitmap_is_refused_for_writes():
    a = core.new_bitmap(64)
    a.flags.writeable = False
    with pytest.raises(InvalidInput):
        core.set_bits(a, np.array([1], np.int64))
    assert core.popcount(a, 64) == 0  # reading is fine


@pytest.mark.parametrize("where", ["both-halves", "first-half", "second-half", "none", "around-middle"])
@pytest.mark.parametrize("cap", [1, 3, 1000, 1 << 17])
def test_long_sparse_walks(where, cap):
    """Maps long enough for the compiled core to split the walk over two threads."""
    nbits = (1 << 23) + 77
    rng = np.random.default_rng(len(where) * 31 + cap)
    lo, hi = {"both-halves": (0, nbits), "first-half": (0, nbits // 3), "second-half": (nbits // 2 + 64, nbits),
              "none": (0, 0), "around-middle": (nbits // 2 - 200, nbits // 2 + 200)}[where]
    idx = np.unique(rng.integers(lo, hi, 300)) if hi > lo else np.zeros(0, np.int64)
    a = core.new_bitmap(nbits)
    core.set_bits(a, idx.astype(np.int64))
    for start in (0, 5, nbits // 2 - 100):
        expected = idx[idx >= start]
        got, pos = [], start
        while pos < nbits:
            out = np.empty(cap, np.int64)
            n, nxt = core.find_set_bits(a, nbits, pos, out)
            t_out = np.empty(cap, np.int64)
            assert twin.find_set_bits(a, nbits, pos, t_out) == (n, nxt)
            assert (t_out[:n] == out[:n]).all()
            got.append(out[:n].copy())
            pos = nxt
        assert (np.concatenate(got) == expected).all()


@st.composite
def long_patchy_bitmaps(draw):
    """Maps long enough for the two-thread dense walk: segments of mixed density."""
    nbits = draw(st.integers(1 << 17, 1 << 19))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    densities = draw(st.lists(st.sampled_from([0.0, 0.001, 0.1, 0.5, 0.9, 1.0]), min_size=1, max_size=8))
    cuts = sorted(rng.integers(0, nbits, len(densities) - 1))
    bits = np.zeros(nbits, dtype=bool)
    for density, lo, hi in zip(densities, [0, *cuts], [*cuts, nbits]):
        bits[lo:hi] = rng.random(hi - lo) < density
    words = np.zeros((nbits + 63) // 64 + draw(st.integers(0, 1)), dtype=np.uint64)
    packed = np.packbits(bits, bitorder="little")
    words.view(np.uint8)[:packed.size] = packed
    return words, nbits, np.flatnonzero(bits)


@settings(max_examples=60, deadline=None)
@given(long_patchy_bitmaps(), st.sampled_from([8191, 8192, 8193, 65537, 1 << 20]), st.integers(0, 1 << 19))
def test_long_dense_walks(bm, cap, start):
    """Every set bit listed once, in order, whatever chunk size; the same as the twin's."""
    words, nbits, ref = bm
    start = min(start, nbits)
    got, pos = [], start
    while pos < nbits:
        out = np.full(cap, -1, np.int64)
        n, nxt = core.find_set_bits(words, nbits, pos, out)
        t_out = np.empty(cap, np.int64)
        assert twin.find_set_bits(words, nbits, pos, t_out) == (n, nxt)
        assert (t_out[:n] == out[:n]).all()
        assert n == cap or nxt == nbits
        got.append(out[:n].copy())
        pos = nxt
    assert np.array_equal(np.concatenate(got) if got else np.zeros(0, np.int64), ref[ref >= start])
