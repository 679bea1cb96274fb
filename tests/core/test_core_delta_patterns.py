"""delta_copy on many generated edit patterns, checked byte for byte by a plain comparison.

Every pattern is tiny (a few 4 KiB blocks) so that thousands run in seconds; files
live on a tmpfs when there is one (fsync is free there). The check never uses the
copier's digests: it reads both files and compares bytes, and derives the blocks
that had to be sent from the bytes too.
"""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from labmig import blockcopy
from labmig.blockcopy import DIGEST_BYTES, REQUEST_BYTES, LocalDestination, delta_copy, is_incomplete
from test_core_bitmap import ref_runs  # the runs oracle of the bitmap tests

BS = 4096
PATTERNS = 10_000
INTERRUPTIONS = 1_500


@pytest.fixture
def workdir(tmp_path):
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        import tempfile
        d = Path(tempfile.mkdtemp(prefix="labmig-test-", dir=shm))
        yield d
        for p in d.iterdir():
            p.unlink()
        d.rmdir()
    else:
        yield tmp_path


def rand_block(rng: random.Random, n: int = BS) -> bytes:
    kind = rng.random()
    if n == 0:
        return b""
    if kind < 0.3:
        return bytes(n)
    if kind < 0.4:  # mostly zero with one byte set: a zero test must look at every byte
        b = bytearray(n)
        b[rng.randrange(n)] = rng.randrange(1, 256)
        return bytes(b)
    return rng.randbytes(n)


def make_pair(rng: random.Random) -> tuple[bytes, bytes | None, set[str]]:
    """A source image and a destination derived from it by one or more edits."""
    nblocks = rng.randrange(0, 7)
    tail = rng.choice([0, 0, rng.randrange(1, BS)])  # an unaligned last block
    src = bytearray(b"".join(rand_block(rng) for _ in range(nblocks)) + rand_block(rng, tail))
    if rng.random() < 0.2 and src:  # trailing zeros in the source
        cut = rng.randrange(len(src))
        src[cut:] = bytes(len(src) - cut)
    kinds: set[str] = set()
    roll = rng.random()
    if roll < 0.08:
        return bytes(src), None, {"missing"}
    dst = bytearray(src)
    for _ in range(rng.randrange(0, 4)):
        what = rng.choice(["flip", "block", "zero", "grow", "shrink", "larger", "garbage-tail"])
        kinds.add(what)
        if what == "flip" and dst:
            dst[rng.randrange(len(dst))] ^= 1 << rng.randrange(8)
        elif what == "block" and dst:
            at = rng.randrange(len(dst))
            dst[at:at + BS] = rng.randbytes(min(BS, len(dst) - at))
        elif what == "zero" and dst:
            at = rng.randrange(len(dst))
            n = rng.randrange(1, 3 * BS)
            dst[at:at + n] = bytes(len(dst[at:at + n]))
        elif what == "grow":  # destination shorter than the source: the copy must grow it
            del dst[rng.randrange(len(dst) + 1):]
        elif what == "shrink" or what == "larger":  # destination longer: the copy must shrink it
            dst += rand_block(rng, rng.randrange(1, 3 * BS))
        elif what == "garbage-tail":
            dst += bytes(rng.randrange(1, BS))
    return bytes(src), bytes(dst), kinds


def blocks_that_differ(src: bytes, dst: bytes | None) -> int:
    """Blocks of src whose bytes differ from dst cut or zero-extended to len(src)."""
    old = (dst or b"")[:len(src)].ljust(len(src), b"\0")
    return sum(src[i:i + BS] != old[i:i + BS] for i in range(0, len(src), BS))


def punch_some_holes(path: Path, rng: random.Random) -> None:
    """Turn some all-zero blocks into real holes, as images often have."""
    size = path.stat().st_size
    data = path.read_bytes()
    fd = os.open(path, os.O_RDWR)
    try:
        from labmig import core
        for i in range(0, size - BS + 1, BS):
            if data[i:i + BS] == bytes(BS) and rng.random() < 0.7:
                core.punch_hole(fd, i, BS)
    finally:
        os.close(fd)


def test_ten_thousand_edit_patterns_end_identical(workdir):
    rng = random.Random(20260214)
    src_p, dst_p = workdir / "src.img", workdir / "dst.img"
    seen: set[str] = set()
    for i in range(PATTERNS):
        src, dst, kinds = make_pair(rng)
        seen |= kinds
        src_p.write_bytes(src)
        if rng.random() < 0.3:
            punch_some_holes(src_p, rng)
        if dst is None:
            dst_p.unlink(missing_ok=True)
        else:
            dst_p.write_bytes(dst)
            if rng.random() < 0.3:
                punch_some_holes(dst_p, rng)
        before = hashlib.sha256(src_p.read_bytes()).digest()
        verify = ("fast", "full", "sha256")[i % 3]
        stats = delta_copy(src_p, dst_p, block_size=BS, verify=verify)
        got = dst_p.read_bytes()
        assert got == src, f"pattern {i} ({sorted(kinds)}): destination differs"
        assert hashlib.sha256(src_p.read_bytes()).digest() == before, "the source was modified"
        assert not is_incomplete(dst_p)
        differ = blocks_that_differ(src, dst)
        assert stats.blocks_sent + stats.blocks_zero == differ, f"pattern {i}: sent more or less than needed"
        assert stats.blocks_matched == stats.blocks_total - differ
        assert stats.blocks_total == (len(src) + BS - 1) // BS
        assert stats.bytes_sent <= differ * BS
    assert {"missing", "grow", "shrink", "larger", "zero", "flip", "block"} <= seen


class Interrupt(Exception):
    pass


class FailingDestination(LocalDestination):
    """A real local destination that stops dead after a given number of operations.

    A write may be cut in the middle, as a crash would leave it.
    """

    def __init__(self, path: Path, budget: int, rng: random.Random) -> None:
        super().__init__(path)
        self.budget, self.rng = budget, rng
        self.opened = False

    def _tick(self) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise Interrupt()

    def open(self, size):
        self._tick()
        self.opened = True
        return super().open(size)

    def digests(self, offset, length, block_size, seed):
        self._tick()
        return super().digests(offset, length, block_size, seed)

    def write(self, offset, data):
        if self.budget == 0 and len(data) > 1:
            super().write(offset, memoryview(data)[: self.rng.randrange(1, len(data))])
        self._tick()
        super().write(offset, data)

    def zero(self, offset, length):
        self._tick()
        super().zero(offset, length)

    def verify(self, algo):
        self._tick()
        return super().verify(algo)

    def finish(self):
        self._tick()
        super().finish()


@pytest.mark.parametrize("window_blocks", [None, 2])
def test_interrupted_copies_then_rerun_end_identical_and_verified(workdir, monkeypatch, window_blocks):
    """Interrupted at any operation, then rerun; with two-block windows the next window's
    digests are asked while the current one is written, so interruptions land there too."""
    if window_blocks:
        monkeypatch.setattr(blockcopy, "WINDOW_BYTES", window_blocks * BS)
    rng = random.Random(77 + (window_blocks or 0))
    src_p, dst_p = workdir / "src.img", workdir / "dst.img"
    interrupted = 0
    for i in range(INTERRUPTIONS):
        src, dst, _ = make_pair(rng)
        src_p.write_bytes(src)
        if dst is None:
            dst_p.unlink(missing_ok=True)
        else:
            dst_p.write_bytes(dst)
        verify = ("fast", "full", "sha256")[i % 3]
        with FailingDestination(dst_p, rng.randrange(0, 12), rng) as failing:
            try:
                delta_copy(src_p, failing, block_size=BS, verify=verify)
            except Interrupt:
                interrupted += 1
                if failing.opened:
                    assert is_incomplete(dst_p), "an interrupted copy must stay marked incomplete"
                else:
                    assert not dst_p.exists() if dst is None else dst_p.read_bytes() == dst
        stats = delta_copy(src_p, dst_p, block_size=BS, verify=verify)
        assert dst_p.read_bytes() == src, f"case {i}: rerun did not end identical"
        assert not is_incomplete(dst_p)
        assert stats.verify_digest
    assert interrupted > INTERRUPTIONS // 3


def test_rerun_after_success_sends_nothing(workdir):
    rng = random.Random(3)
    src_p, dst_p = workdir / "s", workdir / "d"
    src_p.write_bytes(rng.randbytes(37 * BS + 123))
    first = delta_copy(src_p, dst_p, block_size=BS)
    assert first.blocks_sent == 38
    again = delta_copy(src_p, dst_p, block_size=BS)
    assert again.blocks_sent == again.blocks_zero == 0 and again.blocks_matched == 38
    # the wire carried the digests, the request headers and nothing else
    requests = 3  # open, one window of digests, finish
    assert again.bytes_on_wire == 38 * DIGEST_BYTES + requests * REQUEST_BYTES


def leb128(value):
    """Unsigned LEB128 bytes, written out the long way."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_wire_bytes_are_changed_bytes_plus_digests(workdir, seed):
    rng = random.Random(seed)
    src = bytearray(rng.randbytes(200 * BS))
    (workdir / "d").write_bytes(src)
    changed = sorted(rng.sample(range(200), 9))
    for b in changed:
        src[b * BS:(b + 1) * BS] = rng.randbytes(BS)
    (workdir / "s").write_bytes(src)
    stats = delta_copy(workdir / "s", workdir / "d", block_size=BS)
    assert stats.blocks_sent == 9 and stats.bytes_sent == 9 * BS
    assert (workdir / "d").read_bytes() == bytes(src)
    # extents: runs of adjacent changed blocks; each header is gap<<1 and length as varints
    runs = ref_runs(changed)
    headers, end = 0, 0
    for first, n in runs:
        headers += len(leb128((first - end) << 1)) + len(leb128(n))
        end = first + n
    assert stats.extents == len(runs)
    # requests: open, the window's digests, its extent stream, its check, finish; the check's answer
    overhead = 5 * REQUEST_BYTES + DIGEST_BYTES + headers
    assert stats.bytes_on_wire == 9 * BS + 200 * DIGEST_BYTES + overhead
    assert headers <= 3 * len(runs)


def test_destination_stays_sparse(workdir):
    src_p, dst_p = workdir / "s", workdir / "d"
    with open(src_p, "wb") as f:
        f.truncate(64 << 20)
        f.seek(10 << 20)
        f.write(b"x" * BS)
    dst_p.write_bytes(os.urandom(1 << 20))  # data where the source has a hole
    stats = delta_copy(src_p, dst_p, block_size=BS)
    assert dst_p.read_bytes() == src_p.read_bytes()
    assert stats.blocks_sent == 1
    allocated = dst_p.stat().st_blocks * 512
    assert allocated <= 1 << 20, f"destination not sparse: {allocated} bytes allocated"


def test_large_window_walk(workdir, monkeypatch):
    """Several windows, with extents across their edges."""
    monkeypatch.setattr(blockcopy, "WINDOW_BYTES", 16 * BS)
    rng = random.Random(11)
    src = bytearray(rng.randbytes(100 * BS + 7))
    dst = bytearray(src)
    for b in (15, 16, 17, 31, 32, 47, 99, 100):
        dst[b * BS:b * BS + 5] = b"XXXXX"
    (workdir / "s").write_bytes(src)
    (workdir / "d").write_bytes(dst)
    stats = delta_copy(workdir / "s", workdir / "d", block_size=BS)
    assert (workdir / "d").read_bytes() == src
    assert stats.blocks_sent == 8
    assert stats.extents == 6  # 15|16-17|31|32|47|99-100: split at window edges 16 and 32, 96


def test_digest_range_skips_holes_but_equals_reading_them(workdir):
    """The hole-aware digest equals the plain one (which reads the zeros) on sparse files."""
    import numpy as np

    from labmig import core
    from labmig.blockcopy import digest_range

    rng = random.Random(9)
    path = workdir / "sparse"
    for case in range(300):
        size = rng.randrange(0, 40 * BS)
        with open(path, "wb") as f:
            f.truncate(size)
            for _ in range(rng.randrange(0, 6)):
                at = rng.randrange(0, max(size, 1))
                f.seek(at)
                f.write(rng.randbytes(min(rng.randrange(1, 3 * BS), size - at)))
        fd = os.open(path, os.O_RDONLY)
        try:
            offset = rng.randrange(0, 10) * BS
            length = rng.randrange(0, 45 * BS)
            n = (length + BS - 1) // BS
            seed = rng.getrandbits(64)
            a, za = np.zeros((n, 2), np.uint64), core.new_bitmap(n)
            b, zb = np.zeros((n, 2), np.uint64), core.new_bitmap(n)
            got_a = digest_range(fd, offset, length, BS, seed, a, za)
            got_b = core.digest_file(fd, offset, length, BS, seed, b, zb)
        finally:
            os.close(fd)
        assert got_a == got_b, case
        assert (a == b).all() and (za == zb).all(), case
