"""``python -m bench [NAME ...]``: run the benchmark modules of this package, one after the other.

Each module (``bench_*.py``) has a ``main(argv)`` and prints its own figures as
ratios against peers measured in the same run. With names (``copy``,
``bench_bitmap``, ...) only those run; ``python -m bench.bench_copy --help``
shows one module's own options.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time

import bench


def main(argv: list[str] | None = None) -> int:
    available = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="benchmarks to run (default: all): " + ", ".join(n[6:] for n in available))
    args = parser.parse_args(argv)
    names = []
    for name in args.names:
        full = name if name.startswith("bench_") else f"bench_{name}"
        if full not in available:
            parser.error(f"no benchmark {name!r}; choose from {', '.join(n[6:] for n in available)}")
        names.append(full)
    names = names or available
    failed = []
    for name in names:
        print(f"== bench.{name}", flush=True)
        started = time.perf_counter()
        try:
            importlib.import_module(f"bench.{name}").main([])
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed.append(name)
            print(f"   bench.{name} failed: {type(exc).__name__}: {exc}", flush=True)
        print(f"   ({time.perf_counter() - started:.0f} s)\n", flush=True)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
