"""digest_file's two ways to the bytes (hashed in place through a mapping, or read
first) give xxhash's digests, and a file that shrinks under a mapping gives a short
result instead of killing the process."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from labmig import core
from labmig.errors import InvalidInput

MIB = 1 << 20


@st.composite
def files(draw):
    """A few MiB made of random, zero and hole segments, with a ragged end."""
    segments = draw(st.lists(st.tuples(st.sampled_from(["rand", "zero", "hole"]), st.integers(1, 6 * MIB)),
                             min_size=1, max_size=4))
    tail = draw(st.integers(0, 8191))
    return segments, tail


def write_file(path, segments, tail) -> bytes:
    parts = []
    with open(path, "wb") as f:
        for kind, n in segments:
            if kind == "rand":
                chunk = os.urandom(n)
                f.write(chunk)
            elif kind == "zero":
                chunk = bytes(n)
                f.write(chunk)
            else:
                chunk = bytes(n)
                f.seek(n, os.SEEK_CUR)
            parts.append(chunk)
        end = os.urandom(tail)
        f.write(end)
        f.truncate(f.tell())
    return b"".join(parts) + end


@settings(max_examples=12, deadline=None)
@given(files(), st.sampled_from(["auto", "map", "read"]), st.sampled_from([4096, 65536, 1 << 20]),
       st.sampled_from([1, 2]), st.integers(0, 2**64 - 1), st.data())
def test_every_way_gives_xxhash_digests(tmp_path_factory, image, which, bs, threads, seed, data):
    path = tmp_path_factory.mktemp("w") / "img"
    blob = write_file(path, *image)
    offset = data.draw(st.integers(0, len(blob)), label="offset")  # any byte, not only page starts
    length = data.draw(st.integers(0, len(blob) - offset + 2 * bs), label="length")
    n = (length + bs - 1) // bs
    dig, zero = np.zeros((n, 2), np.uint64), core.new_bitmap(n)
    previous = core.set_digest_way(which)
    fd = os.open(path, os.O_RDONLY)
    try:
        got = core.digest_file(fd, offset, length, bs, seed, dig, zero, threads=threads)
    finally:
        os.close(fd)
        core.set_digest_way(previous)
    there = blob[offset:offset + length]
    assert got == len(there)
    m = (len(there) + bs - 1) // bs
    want = [xxhash.xxh3_128_intdigest(there[i * bs:(i + 1) * bs], seed) for i in range(m)]
    assert [int(lo) | int(hi) << 64 for lo, hi in dig[:m]] == want
    assert not dig[m:].any()  # blocks past EOF are left untouched
    zeros = [i for i in range(m) if not any(there[i * bs:(i + 1) * bs])]
    assert [i for i in range(n) if int(zero[i >> 6]) >> (i & 63) & 1] == zeros


def test_unknown_way_is_refused():
    with pytest.raises(InvalidInput, match="digest way"):
        core.set_digest_way("mmap")


RACE = textwrap.dedent("""
    import faulthandler, os, sys, threading, time
    import numpy as np
    from labmig import core, _fastcopy
    faulthandler.enable()  # installed first, as pytest does: the core's handler must chain to it
    core.set_digest_way("map")
    size, bs = 64 << 20, 65536
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    os.write(fd, os.urandom(size))
    stop = False

    def flap():  # shrink and grow the file, over and over, while it is digested
        while not stop:
            os.ftruncate(fd, size // 2)
            os.ftruncate(fd, size)

    t = threading.Thread(target=flap, daemon=True)  # a failure below must not leave it running
    t.start()
    dig = np.zeros((size // bs, 2), np.uint64)
    short = runs = 0
    deadline = time.monotonic() + 30
    while (_fastcopy._sigbus_caught() == 0 or short == 0) and time.monotonic() < deadline:
        got = core.digest_file(fd, 0, size, bs, 1, dig, None, 1)
        assert 0 <= got <= size, got  # short: the file ended there while it was read
        short += got < size
        runs += 1
    stop = True
    t.join()
    print(_fastcopy._sigbus_caught(), short, runs)
""")


@pytest.mark.skipif(core.IMPLEMENTATION != "compiled", reason="only the compiled core maps files")
def test_file_shrinking_under_the_mapping_gives_a_short_result(tmp_path):
    r = subprocess.run([sys.executable, "-c", RACE, str(tmp_path / "img")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"the process died ({r.returncode}): {r.stderr[-2000:]}"
    caught, short, runs = map(int, r.stdout.split())
    assert caught > 0, f"no SIGBUS in {runs} digests: the race was never hit"
    assert short > 0


OTHER_SIGBUS = textwrap.dedent("""
    import faulthandler, mmap, os, sys
    import numpy as np
    from labmig import core
    faulthandler.enable()
    path = sys.argv[1]
    with open(path, "wb") as f:
        f.write(os.urandom(4 << 20))
    fd = os.open(path, os.O_RDWR)
    core.set_digest_way("map")
    core.digest_file(fd, 0, 4 << 20, 65536, 1, np.zeros((64, 2), np.uint64), None, 1)  # installs the handler
    m = mmap.mmap(fd, 4 << 20)
    os.ftruncate(fd, 0)
    print("touching", flush=True)
    m[3 << 20]  # past the end: a SIGBUS that is not the core's
    print("survived", flush=True)
""")


@pytest.mark.skipif(core.IMPLEMENTATION != "compiled", reason="only the compiled core installs a handler")
def test_a_sigbus_elsewhere_still_reaches_the_previous_handler(tmp_path):
    r = subprocess.run([sys.executable, "-c", OTHER_SIGBUS, str(tmp_path / "img")], capture_output=True,
                       text=True, timeout=60)
    assert "touching" in r.stdout and "survived" not in r.stdout
    assert r.returncode != 0
    assert "Bus error" in r.stderr  # faulthandler's report: it got the signal
