"""Bitmap scans on a 2**28-bit map: the core against the best numpy formulations.

For each density the set bits are listed (``find_set_bits``, walked in chunks of
a preallocated array of the simulator's chunk size) and counted; numpy peers run on the
same bitmap in the same run, and the fastest of them is the reference. Figures:
GB/s of bitmap scanned, ns per set bit, and the speed-up over the best numpy way.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from labmig import core
from labmig.sim.workloads import CHUNK

NBITS = 1 << 28
DENSITIES = (0.00001, 0.001, 0.1, 0.5)


def make_bitmap(density: float, rng: np.random.Generator) -> np.ndarray:
    bm = core.new_bitmap(NBITS)
    if density >= 0.05:  # draw the bits word by word: exact density, no huge index array
        words = np.zeros(len(bm), dtype=np.uint64)
        for bit in range(64):
            words |= (rng.random(len(bm)) < density).astype(np.uint64) << np.uint64(bit)
        bm[:] = words
    else:
        core.set_bits(bm, rng.choice(NBITS, int(NBITS * density), replace=False).astype(np.int64))
    return bm


def core_walk(bm: np.ndarray, out: np.ndarray) -> int:
    pos, total = 0, 0
    while pos < NBITS:
        n, pos = core.find_set_bits(bm, NBITS, pos, out)
        total += n
    return total


def np_unpackbits(bm: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.unpackbits(bm.view(np.uint8), bitorder="little"))


def np_nonzero_words(bm: np.ndarray) -> np.ndarray:
    nz = np.flatnonzero(bm)
    rows, cols = np.nonzero(np.unpackbits(bm[nz].view(np.uint8), bitorder="little").reshape(-1, 64))
    return nz[rows] * 64 + cols


def np_bool_view(bm: np.ndarray) -> np.ndarray:
    bits = np.unpackbits(bm.view(np.uint8), bitorder="little").view(bool)
    return np.nonzero(bits)[0]


def np_bit_planes(bm: np.ndarray) -> np.ndarray:
    """64 passes, one per bit position; merged by sorting."""
    parts = [np.flatnonzero(bm & np.uint64(1 << j)) * 64 + j for j in range(64)]
    out = np.concatenate(parts)
    out.sort()
    return out


NUMPY_PEERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "unpackbits+flatnonzero": np_unpackbits,
    "nonzero words, then unpack": np_nonzero_words,
    "unpackbits as bool + nonzero": np_bool_view,
    "64 bit planes + sort": np_bit_planes,
}


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best is kept")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(1)
    out = np.empty(CHUNK, dtype=np.int64)
    map_bytes = NBITS / 8
    print(f"bitmap of 2**28 bits ({map_bytes / 2**20:.0f} MiB), core: {core.IMPLEMENTATION}, best of {args.repeat}")
    print(f"{'density':>9} {'set bits':>11} {'core ms':>8} {'GB/s':>7} {'ns/bit':>7} "
          f"{'best numpy':>28} {'ms':>8} {'speed-up':>8} {'popcount GB/s':>13}")
    ok = True
    for density in DENSITIES:
        bm = make_bitmap(density, rng)
        expected = core.popcount(bm, NBITS)
        # rounds interleave the core and its peers, so load from elsewhere hits both alike;
        # within a round each runs twice back to back (the second finds the map in cache)
        t_core = t_pop = float("inf")
        peers = {name: float("inf") for name in NUMPY_PEERS}
        for r in range(args.repeat):
            t, count = best_of(lambda bm=bm: core_walk(bm, out), 2)
            assert count == expected
            t_core = min(t_core, t)
            t_pop = min(t_pop, best_of(lambda bm=bm: core.popcount(bm, NBITS), 2)[0])
            for name, fn in NUMPY_PEERS.items():
                if name == "64 bit planes + sort" and r > 0:
                    continue  # far slower than the others at every density; one run tells
                t, res = best_of(lambda fn=fn, bm=bm: fn(bm), 2 if r else 1)
                assert len(res) == expected, name  # type: ignore[arg-type]
                peers[name] = min(peers[name], t)
        best_name = min(peers, key=peers.get)  # type: ignore[arg-type]
        speedup = peers[best_name] / t_core
        ns_bit = t_core / max(count, 1) * 1e9
        print(f"{density * 100:>8.3f}% {count:>11,} {t_core * 1e3:>8.2f} {map_bytes / t_core / 1e9:>7.1f} "
              f"{ns_bit:>7.2f} {best_name:>28} {peers[best_name] * 1e3:>8.2f} {speedup:>7.1f}x "
              f"{map_bytes / t_pop / 1e9:>13.1f}")
        if density < 0.0001:
            ok &= map_bytes / t_core / 1e9 >= 15
        if density >= 0.1:
            ok &= ns_bit <= 1.5
        ok &= speedup >= 10
    print("targets (>=15 GB/s at 0.001 %, <=1.5 ns/bit at 10 % and 50 %, >=10x numpy):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
