"""``python -m labmig.copydemo``: a hashed delta copy of a generated disk image, step by step.

It makes a 256 MiB image (random data and zero runs, as a real disk has),
copies it to an empty destination, lets "the VM" change 1 % of its blocks,
copies again — only the changed blocks travel — and checks the result with
``cmp``, a comparison independent of labmig's own digests.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from . import core
from .blockcopy import DEFAULT_BLOCK, delta_copy
from .units import format_size, parse_size


def make_image(path: Path, size: int, rng: random.Random) -> None:
    bs = DEFAULT_BLOCK
    with open(path, "wb") as f:
        f.truncate(size)
        for b in range(size // bs):
            if rng.random() < 0.6:  # 40 % of the image stays a hole, as unused disk space does
                f.seek(b * bs)
                f.write(rng.randbytes(bs))


def dirty(path: Path, fraction: float, rng: random.Random) -> int:
    """Rewrite ``fraction`` of the blocks, as a running guest would; returns how many."""
    bs = DEFAULT_BLOCK
    nblocks = path.stat().st_size // bs
    picked = rng.sample(range(nblocks), max(1, int(nblocks * fraction)))
    fd = os.open(path, os.O_WRONLY)
    try:
        for b in picked:
            os.pwrite(fd, rng.randbytes(bs), b * bs)
    finally:
        os.close(fd)
    return len(picked)


def show(title: str, stats) -> None:
    print(f"\n== {title}")
    print(stats.summary())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="labmig.copydemo", description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256MiB", help="image size (default 256MiB)")
    ap.add_argument("--dir", type=Path, default=Path("demo-out"), help="working directory (default ./demo-out)")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    rng = random.Random(2026)
    args.dir.mkdir(parents=True, exist_ok=True)
    src, dst = args.dir / "disk.img", args.dir / "disk-copy.img"
    dst.unlink(missing_ok=True)
    print(f"labmig delta-copy demo (core: {core.IMPLEMENTATION}), image {format_size(size)} in {args.dir}/")
    make_image(src, size, rng)

    first = delta_copy(src, dst)
    show("first copy, to an empty destination: every non-zero block travels", first)
    n = dirty(src, 0.01, rng)
    print(f"\n(the guest now rewrites {n} blocks, 1 % of the disk)")
    second = delta_copy(src, dst)
    show("second copy: only what changed travels", second)

    same = shutil.which("cmp") and subprocess.run(["cmp", str(src), str(dst)]).returncode == 0
    allocated = dst.stat().st_blocks * 512
    print(f"\nidentical by cmp: {'yes' if same else 'NO'}; destination allocates {format_size(allocated)} "
          f"of {format_size(size)} (holes kept)")
    print(f"wire: first copy {format_size(first.bytes_on_wire)}, second {format_size(second.bytes_on_wire)} "
          f"({second.bytes_on_wire / max(first.bytes_on_wire, 1) * 100:.1f} % of the first)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
