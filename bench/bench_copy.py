"""`labmig copy` timed as a process against its peers, on an image with 1 % of its blocks changed.

Every tool runs as a process and is timed the same way, from its start to its
exit, as a user runs it: ``labmig copy SRC DST``, a minimal C delta copier
(``bench/cdelta.c``: two threads, XXH3-64 per 64 KiB block, pwrite, fsync), reading
both files once with two threads in C (the floor for any tool that compares two
files), ``rsync --inplace --no-whole-file``, ``cp`` and ``qemu-img convert -n``.
labmig's in-process engine time (its own ``seconds``) is reported beside it.
Before every run the destination is put back to the same state (the source with
1 % of its 64 KiB blocks different) and the page cache to the state measured:

    readahead   both files dropped from the cache and read back, as a first read
                from disk leaves them (large folios that one fault maps whole)
    written     the destination rewritten by ``cp`` first, its pages as cp left
                them (small pieces: hashing them costs more than reading them)
    cold        both files dropped from the cache: the copy reads the disk

The rounds interleave the tools, so outside load hits all alike; best and median
of each. Also measured: the same job on an image that is 50 % zero blocks, the
bytes that would cross a wire against changed bytes + 16 bytes per block, and the
peak memory of a copy of images of growing size (in a child process).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

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


def evict(*paths: Path) -> None:
    """Drop the files from the page cache (written pages are synced first: dirty ones stay)."""
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def build_cdelta(directory: Path) -> Path:
    """bench/cdelta.c compiled into ``directory`` (rebuilt when the source is newer)."""
    source = Path(__file__).with_name("cdelta.c")
    binary = directory / "cdelta"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-pthread", "-o", str(binary), str(source), "-lxxhash"], check=True)
    return binary


def labmig_command() -> list[str]:
    """``labmig`` as users run it: the console script beside this Python, else ``python -m labmig``."""
    script = Path(sys.executable).with_name("labmig")
    return [str(script)] if script.exists() else [sys.executable, "-m", "labmig"]


CACHE_STATES = ("readahead", "written", "cold")
LABMIG = "labmig copy"
CDELTA = "C delta copier"
READ = "read both, C, 2 threads"
NO_WRITE = (READ,)
HALF_ZERO = "labmig copy, 50 % zero image"


class Tools:
    """The tools as argv lists; ``labmig copy``'s engine time is read from its --json."""

    def __init__(self, directory: Path, names: list[str] | None = None) -> None:
        cdelta = str(build_cdelta(directory))
        labmig = labmig_command()
        self.argv: dict[str, object] = {
            LABMIG: lambda sc: labmig + ["copy", "--json", str(sc.src), str(sc.dst)],
            CDELTA: lambda sc: [cdelta, "copy", str(sc.src), str(sc.dst)],
            READ: lambda sc: [cdelta, "read", str(sc.src), str(sc.dst)],
        }
        if shutil.which("rsync"):
            # --ignore-times: same size and no -t would otherwise let rsync skip the file
            self.argv["rsync --inplace --no-whole-file"] = lambda sc: [
                "rsync", "--inplace", "--no-whole-file", "--ignore-times", str(sc.src), str(sc.dst)]
        self.argv["cp"] = lambda sc: ["cp", str(sc.src), str(sc.dst)]
        if shutil.which("qemu-img"):
            self.argv["qemu-img convert -n"] = lambda sc: [
                "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(sc.src), str(sc.dst)]
        if names:
            unknown = [n for n in names if not any(n in t for t in self.argv)]
            if unknown:
                raise SystemExit(f"no tool {unknown[0]!r}; tools: {', '.join(self.argv)}")
            self.argv = {t: f for t, f in self.argv.items() if any(n in t for n in names)}


def prepare(sc: Scenario, cache: str) -> None:
    """The destination back to its 1 %-different state and the page cache as ``cache`` says."""
    if cache == "written":
        subprocess.run(["cp", str(sc.src), str(sc.dst)], check=True)
    sc.reset()
    if cache == "written":
        evict(sc.src)
    else:
        evict(sc.src, sc.dst)
    if cache == "readahead":
        read_both([sc.src, sc.dst])
    elif cache == "written":
        read_file(sc.src)          # the source as readahead leaves it; the destination as cp did
        os.sync()                  # cp's write-back must not land on the next tool's bill


def run_timed(argv: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, out.stdout


def measure(sc: Scenario, tools: Tools, cache: str, repeat: int, zero: Scenario | None = None,
            slow_once: bool = True) -> dict[str, dict[str, float]]:
    """Per tool: best and median process time over ``repeat`` interleaved rounds, and
    labmig's engine time; rsync and cp, many times slower, run in the first round only
    when ``slow_once``."""
    jobs = [(name, sc, make) for name, make in tools.argv.items()]
    if zero is not None and LABMIG in tools.argv:
        jobs.append((HALF_ZERO, zero, tools.argv[LABMIG]))
    times: dict[str, list[float]] = {name: [] for name, _, _ in jobs}
    engine: dict[str, list[float]] = {}
    for r in range(repeat):
        for name, scenario, make in jobs:
            if r > 0 and slow_once and (name.startswith("rsync") or name == "cp"):
                continue
            prepare(scenario, cache)
            seconds, stdout = run_timed(make(scenario))
            times[name].append(seconds)
            if name in (LABMIG, HALF_ZERO):
                engine.setdefault(name, []).append(json.loads(stdout)["seconds"])
            if name not in NO_WRITE:
                assert scenario.identical(), f"{name} did not make the destination identical"
    result = {name: {"best": min(t), "median": statistics.median(t), "runs": len(t)} for name, t in times.items()}
    for name, t in engine.items():
        result[name]["engine_best"] = min(t)
        result[name]["engine_median"] = statistics.median(t)
    return result


def print_table(title: str, result: dict[str, dict[str, float]]) -> None:
    floor = result.get(READ, {}).get("best")
    peer = result.get(CDELTA, {}).get("best")
    print(title)
    print(f"  {'tool':<34} {'best':>7} {'median':>7} {'x read both':>11} {'x C copier':>10}")
    for name, r in result.items():
        x_read = f"{r['best'] / floor:.2f}" if floor else "-"
        x_c = f"{r['best'] / peer:.2f}" if peer else "-"
        print(f"  {name:<34} {r['best']:>7.3f} {r['median']:>7.3f} {x_read:>11} {x_c:>10}"
              + (f"   (engine in-process {r['engine_best']:.3f} s)" if "engine_best" in r else ""))


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
    ap.add_argument("--repeat", type=int, default=5, help="rounds; best and median of each tool are kept")
    ap.add_argument("--dir", type=Path, default=OUT, help="where the images go (default bench/out)")
    ap.add_argument("--cache", default=",".join(CACHE_STATES),
                    help="page-cache states to measure, comma-separated: " + ", ".join(CACHE_STATES))
    ap.add_argument("--tools", help="only the tools whose names contain these words, comma-separated "
                                    "(e.g. labmig,C,read)")
    ap.add_argument("--no-extras", action="store_true",
                    help="skip the 50 %%-zero image, the wire bytes and the memory probe")
    ap.add_argument("--memory-sizes", default="1GiB,16GiB,64GiB", help="image sizes for the memory probe")
    ap.add_argument("--keep", action="store_true", help="keep the images for the next run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    size = parse_size(args.size) // BS * BS
    caches = [c.strip() for c in args.cache.split(",") if c.strip()]
    bad = [c for c in caches if c not in CACHE_STATES]
    if bad or not caches:
        ap.error(f"unknown cache state {bad[0] if bad else args.cache!r}; use {', '.join(CACHE_STATES)}")
    args.dir.mkdir(parents=True, exist_ok=True)
    tools = Tools(args.dir, [t.strip() for t in args.tools.split(",")] if args.tools else None)
    print(f"`labmig copy` and its peers as processes: a {format_size(size)} image, 1 % of 64 KiB blocks "
          f"changed, core {core.IMPLEMENTATION}, {args.repeat} rounds (rsync and cp: 1)")
    results: dict[str, object] = {"size": size, "repeat": args.repeat}

    rand = Scenario(args.dir, "random", size, 0.0, seed=1)
    zero = None if args.no_extras else Scenario(args.dir, "halfzero", size, 0.5, seed=2)
    for cache in caches:
        result = measure(rand, tools, cache, args.repeat, zero=zero if cache == "readahead" else None)
        results[cache] = result
        print_table(f"page cache: {cache}", result)
        if cache == "readahead" and HALF_ZERO in result:
            print(f"  50 % zero image: {result[HALF_ZERO]['best'] / result[LABMIG]['best']:.2f}x "
                  "the random image's time")
        ratios = ratios_of(result)
        results[f"{cache}_ratios"] = ratios
        for k, v in ratios.items():
            print(f"    {k:<44} {v:.2f}")

    if not args.no_extras:
        results["wire"] = wire_bytes(rand)
        results["memory"] = memory(args, rand, size)
    if not args.keep:
        for sc in (rand, zero):
            if sc is not None:
                sc.src.unlink(missing_ok=True)
                sc.dst.unlink(missing_ok=True)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0


def ratios_of(result: dict[str, dict[str, float]]) -> dict[str, float]:
    """The figures the README quotes, each from times of this one run (best of the rounds)."""
    best = {name: r["best"] for name, r in result.items()}
    nan = float("nan")
    ours, peer, floor = best.get(LABMIG, nan), best.get(CDELTA, nan), best.get(READ, nan)
    rsync = best.get("rsync --inplace --no-whole-file", nan)
    return {
        "labmig / C copier": ours / peer,
        "labmig / read both": ours / floor,
        "C copier / read both": peer / floor,
        "qemu-img convert -n / labmig": best.get("qemu-img convert -n", nan) / ours,
        "rsync / labmig": rsync / ours,
        "rsync / C copier (the ceiling of rsync / labmig)": rsync / peer,
        "cp / labmig": best.get("cp", nan) / ours,
    }


def wire_bytes(rand: Scenario) -> dict[str, int]:
    rand.reset()
    stats = delta_copy(rand.src, rand.dst, block_size=BS)
    changed = len(rand.changed) * BS
    bound = changed + 16 * stats.blocks_total
    print(f"bytes on the wire: {stats.bytes_on_wire:,} = changed {changed:,} + digests {16 * stats.blocks_total:,} "
          f"+ {stats.bytes_on_wire - bound:,} of request and extent headers and checks "
          f"({stats.extents:,} extents, {(stats.bytes_on_wire - bound) / max(stats.extents, 1):.1f} B per extent)")
    return {"bytes_on_wire": stats.bytes_on_wire, "changed_bytes": changed, "bound": bound,
            "blocks": stats.blocks_total, "changed_blocks": len(rand.changed)}


def memory(args: argparse.Namespace, rand: Scenario, size: int) -> dict[str, dict[str, int]]:
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
    return mem


if __name__ == "__main__":
    raise SystemExit(main())
