"""Delta copy of a disk image with 1 % of its blocks changed, against its peers, warm page cache.

"Warm" means, by default, that before every run both files are dropped from
the page cache and read back, as a first read from disk leaves them. How the
cached pages came to be matters on kernels that cache files in large folios:
pages read in by readahead sit in large folios that one fault maps whole, so
hashing them in place costs about what reading them costs; pages written in
small pieces (as ``cp`` or ``qemu-img`` leave a destination) do not, and then
a hashed copy costs reading plus hashing. ``--cache written`` keeps the pages
as the previous tool left them; the default run also measures that case once.

Peers measured in the same run on the same files: reading both files once with
two threads (the floor for any tool that must compare them), hashing both with
the core's own kernel on two threads and nothing else (the floor for a hashed
delta copy), ``rsync --inplace --no-whole-file``, ``cp`` and ``qemu-img convert -n``. Before every run the
destination is put back to the same state (the source with 1 % of its 64 KiB
blocks different), so every tool faces the same job. Also measured: the same
job on an image that is 50 % zero blocks, the bytes that would cross a wire
against changed bytes + 16 bytes per block, and the peak memory of a copy of
images of growing size (in a child process).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from labmig import core
from labmig.blockcopy import delta_copy
from labmig.units import format_size, parse_size

BS = 64 << 10
OUT = Path(__file__).resolve().parent / "out"


def write_image(path: Path, size: int, zero_fraction: float, rng: random.Random) -> None:
    """Random blocks, ``zero_fraction`` of them all zero, written sequentially."""
    chunk = bytearray()
    zero = bytes(BS)
    with open(path, "wb") as f:
        for _ in range(size // BS):
            chunk += zero if rng.random() < zero_fraction else os.urandom(BS)
            if len(chunk) >= 16 << 20:
                f.write(chunk)
                chunk.clear()
        f.write(chunk)


class Scenario:
    """A source image and a destination that differs from it in 1 % of its blocks."""

    def __init__(self, directory: Path, name: str, size: int, zero_fraction: float, seed: int) -> None:
        self.src, self.dst = directory / f"{name}.src.img", directory / f"{name}.dst.img"
        rng = random.Random(seed)
        if not self.src.exists() or self.src.stat().st_size != size:
            write_image(self.src, size, zero_fraction, rng)
        nblocks = size // BS
        self.changed = sorted(rng.sample(range(nblocks), max(1, nblocks // 100)))
        self.old = {b: os.urandom(BS) for b in self.changed}  # what the destination holds there
        if not self.dst.exists() or self.dst.stat().st_size != size:
            shutil.copyfile(self.src, self.dst)
        self.reset()
        self.warm()

    def reset(self) -> None:
        """Put the destination back to: source with 1 % of blocks different."""
        fd = os.open(self.dst, os.O_RDWR)
        try:
            for b in self.changed:
                os.pwrite(fd, self.old[b], b * BS)
        finally:
            os.close(fd)
        mark = self.dst.with_name(f".{self.dst.name}.incomplete")
        mark.unlink(missing_ok=True)

    def warm(self, evict: bool = True) -> None:
        """Both files in the page cache; with ``evict``, dropped first and read back."""
        if evict:
            os.sync()  # dirty pages cannot be dropped
            for path in (self.src, self.dst):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
        read_both([self.src, self.dst])

    def identical(self) -> bool:
        return subprocess.run(["cmp", "-s", str(self.src), str(self.dst)]).returncode == 0


def read_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    offset = 0
    try:
        while True:
            n = os.preadv(fd, [view], offset)
            if n <= 0:
                break
            offset += n
    finally:
        os.close(fd)


def read_both(paths: list[Path]) -> None:
    threads = [threading.Thread(target=read_file, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def digest_both(paths: list[Path]) -> None:
    """Every block of both files hashed, one thread each, as a copy's two sides do."""
    def one(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            out = np.zeros(((size + BS - 1) // BS, core.DIGEST_WORDS), dtype=np.uint64)
            core.digest_file(fd, 0, size, BS, 1, out, None, 1)
        finally:
            os.close(fd)

    threads = [threading.Thread(target=one, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


HALF_ZERO = "labmig, 50 % zero image"
NO_WRITE = ("read both, 2 threads", "hash both, 2 threads (core)")


def measure(sc: Scenario, repeat: int, peers: bool, evict: bool = True,
            zero: Scenario | None = None) -> dict[str, float]:
    """Best-of times; rounds interleave the tools (and the 50 %-zero image's copy,
    when ``zero`` is given) so outside load hits all alike."""
    tools: dict[str, tuple[Scenario, object]] = {
        "labmig delta copy": (sc, lambda: delta_copy(sc.src, sc.dst, block_size=BS)),
        "read both, 2 threads": (sc, lambda: read_both([sc.src, sc.dst])),
        "hash both, 2 threads (core)": (sc, lambda: digest_both([sc.src, sc.dst])),
    }
    if zero is not None:
        tools[HALF_ZERO] = (zero, lambda: delta_copy(zero.src, zero.dst, block_size=BS))
    if peers:
        if shutil.which("rsync"):
            # --ignore-times: same size and no -t would otherwise let rsync skip the file
            tools["rsync --inplace --no-whole-file"] = (sc, lambda: run(
                ["rsync", "--inplace", "--no-whole-file", "--ignore-times", str(sc.src), str(sc.dst)]))
        tools["cp"] = (sc, lambda: run(["cp", str(sc.src), str(sc.dst)]))
        if shutil.which("qemu-img"):
            tools["qemu-img convert -n"] = (sc, lambda: run(
                ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(sc.src), str(sc.dst)]))
    best = {name: float("inf") for name in tools}
    for r in range(repeat):
        for name, (scenario, fn) in tools.items():
            if r > 0 and name.startswith("rsync"):
                continue  # tens of seconds each: one run is plenty to show the gap
            scenario.reset()
            os.sync()  # the reset's own writes must not land on the next tool's bill
            scenario.warm(evict)
            best[name] = min(best[name], timed(fn))
            if name not in NO_WRITE:
                assert scenario.identical(), f"{name} did not make the destination identical"
    return best


def child_peak(src: Path, dst: Path) -> tuple[int, int]:
    """RSS (bytes) of a child process after its imports, and its peak during ``delta_copy(src, dst)``."""
    # VmHWM is reset after the imports (clear_refs 5), so the peak is the copy's own
    code = (
        "import sys\n"
        "from labmig.blockcopy import delta_copy\n"
        "def kib(key):\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))\n"
        "base = kib('VmRSS:')\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "delta_copy(sys.argv[1], sys.argv[2])\n"
        "print(base * 1024, kib('VmHWM:') * 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], check=True,
                         capture_output=True, text=True).stdout
    base, peak = (int(x) for x in out.split())
    return base, peak


def memory_probe(directory: Path, size: int) -> tuple[int, int]:
    """child_peak of a full copy of a sparse ``size`` image with data scattered through it."""
    src, dst = directory / "mem.src.img", directory / "mem.dst.img"
    with open(src, "wb") as f:
        f.truncate(size)
        for i in range(64):
            f.seek(i * (size // 64))
            f.write(os.urandom(4 << 20))
    dst.unlink(missing_ok=True)
    try:
        return child_peak(src, dst)
    finally:
        src.unlink()
        dst.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="2GiB", help="image size (default 2GiB)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds; the best time of each tool is kept")
    ap.add_argument("--dir", type=Path, default=OUT, help="where the images go (default bench/out)")
    ap.add_argument("--memory-sizes", default="1GiB,16GiB,64GiB", help="image sizes for the memory probe")
    ap.add_argument("--cache", choices=("read", "written"), default="read",
                    help="page cache before each run: files dropped and read back (read, the default) "
                         "or left as the previous tool wrote them (written)")
    ap.add_argument("--keep", action="store_true", help="keep the images for the next run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    size = parse_size(args.size) // BS * BS
    args.dir.mkdir(parents=True, exist_ok=True)
    evict = args.cache == "read"
    print(f"delta copy of a {format_size(size)} image, 1 % of 64 KiB blocks changed, core {core.IMPLEMENTATION}, "
          f"best of {args.repeat}, page cache as {'read from disk' if evict else 'the previous tool left it'}")
    results: dict[str, object] = {"cache": args.cache}

    rand = Scenario(args.dir, "random", size, 0.0, seed=1)
    zero = Scenario(args.dir, "halfzero", size, 0.5, seed=2)
    best = measure(rand, args.repeat, peers=True, evict=evict, zero=zero)
    half_zero = best.pop(HALF_ZERO)
    ours = best["labmig delta copy"]
    print(f"{'tool':<34} {'seconds':>8} {'vs labmig':>10}")
    for name, t in best.items():
        print(f"{name:<34} {t:>8.3f} {t / ours:>9.2f}x")
    results["random"] = best
    results["half_zero"] = {"labmig delta copy": half_zero}
    print(f"50 % zero blocks: labmig {half_zero:.3f} s ({half_zero / ours:.2f}x the random image's time)")

    if evict:  # the other case once: the destination's pages as cp wrote them
        run(["cp", str(rand.src), str(rand.dst)])
        wbest = measure(rand, args.repeat, peers=False, evict=False)
        results["cache_written"] = wbest
        print("destination pages as cp wrote them: labmig {:.3f} s, read both {:.3f}, hash both {:.3f} "
              "({:.2f}x read-both; hashing floor {:.2f}x)".format(
                  wbest["labmig delta copy"], wbest["read both, 2 threads"], wbest["hash both, 2 threads (core)"],
                  wbest["labmig delta copy"] / wbest["read both, 2 threads"],
                  wbest["hash both, 2 threads (core)"] / wbest["read both, 2 threads"]))

    rand.reset()
    stats = delta_copy(rand.src, rand.dst, block_size=BS)
    changed = len(rand.changed) * BS
    bound = changed + 16 * stats.blocks_total
    print(f"bytes on the wire: {stats.bytes_on_wire:,} = changed {changed:,} + digests {16 * stats.blocks_total:,} "
          f"+ {stats.bytes_on_wire - bound:,} of request and extent headers and checks "
          f"({stats.extents:,} extents, {(stats.bytes_on_wire - bound) / max(stats.extents, 1):.1f} B per extent)")
    results["wire"] = {"bytes_on_wire": stats.bytes_on_wire, "changed_bytes": changed, "bound": bound,
                       "blocks": stats.blocks_total, "changed_blocks": len(rand.changed)}

    ratios = {
        "vs read-both (<= 1.3)": ours / best["read both, 2 threads"],
        "hash-both / read-both (floor)": best["hash both, 2 threads (core)"] / best["read both, 2 threads"],
        "rsync / labmig (>= 8)": best.get("rsync --inplace --no-whole-file", float("nan")) / ours,
        "cp / labmig (> 1)": best["cp"] / ours,
        "qemu-img / labmig (> 1)": best.get("qemu-img convert -n", float("nan")) / ours,
        "half-zero / random (<= 1)": half_zero / ours,
    }
    for k, v in ratios.items():
        print(f"  {k:<28} {v:.2f}")
    results["ratios"] = ratios

    mem = {}
    rand.dst.unlink()
    base, peak = child_peak(rand.src, rand.dst)  # every block sent: the data path at its fullest
    mem["full copy " + args.size] = {"after_imports": base, "peak": peak}
    print(f"peak RSS of a full copy of the {format_size(size)} random image: {format_size(peak)} "
          f"(after imports: {format_size(base)}; the copy added {format_size(peak - base)})")
    for text in args.memory_sizes.split(","):
        msize = parse_size(text)
        base, peak = memory_probe(args.dir, msize)
        mem[text] = {"after_imports": base, "peak": peak}
        print(f"peak RSS copying a {format_size(msize)} image: {format_size(peak)} "
              f"(after imports: {format_size(base)}; the copy added {format_size(peak - base)})")
    results["memory"] = mem

    if not args.keep:
        for sc in (rand, zero):
            sc.src.unlink(missing_ok=True)
            sc.dst.unlink(missing_ok=True)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
