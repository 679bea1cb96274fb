"""``python -m bench``: run every benchmark module of this package, one after the other.

Each module (``bench_*.py``) has a ``main(argv)`` and prints its own figures as
ratios against peers measured in the same run.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench


def main() -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
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
