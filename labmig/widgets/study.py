"""Experiment helpers the lab notebooks call, so that every cell stays a line or two.

    plan(**params)              a simulator Plan from the short names ("memory", "dirty-rate" …)
    sweep(plan, name, values)   the plan simulated once per value of one parameter
    strategies(plan, names)     the same plan under several strategies (options per strategy)
    table(results, labels)      downtime, total time, bytes, passes, faults, throttle, outcome
    figure(fig) / timeline(r)   a matplotlib figure as a PNG a notebook shows
    lab_or_none()               (LocalLab, why) when the local lab is up, else (None, why)
    lab_guest(lab, name)        the notebook's guest on the lab, created when missing
    copy_race(size, changed)    delta copy vs cp vs rsync vs a numpy block compare on temp files
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..model import MigrationResult
from ..units import format_duration, format_size
from . import plots
from .tables import Table


def plan(strategy: str = "precopy", options: dict[str, Any] | None = None, **params: Any):
    """``plan(memory="8GiB", dirty_rate="200MiB/s", link_rate="10Gbit/s", wss="1GiB")``.

    A dirty rate without a workload means uniform random writes over the working set;
    ``max_bandwidth="50MiB/s"`` caps the migration stream as QEMU's max-bandwidth does.
    """
    from ..sim.plan import Plan

    out = Plan(strategy=strategy, options=dict(options or {}))
    if "dirty_rate" in params and "workload" not in params:
        params["workload"] = "uniform"
    for name, value in params.items():
        out = out.with_param(name, value)
    return out.validated()


def sweep(base, name: str, values: Iterable[Any]) -> list[tuple[Any, MigrationResult]]:
    from ..sim.run import simulate

    return [(value, simulate(base.with_param(name, value))) for value in values]


def strategies(base, names: Sequence[str],
               options: dict[str, dict[str, Any]] | None = None) -> dict[str, MigrationResult]:
    from ..sim.run import simulate

    options = options or {}
    return {name: simulate(dataclasses.replace(base, strategy=name, options=options.get(name, {})))
            for name in names}


def table(results: dict[Any, MigrationResult] | Sequence[tuple[Any, MigrationResult]], first: str = "run") -> Table:
    items = list(results.items()) if isinstance(results, dict) else list(results)
    rows = [(label, str(r.outcome), format_duration(r.downtime), format_duration(r.total_time),
             format_size(r.bytes_total), r.iterations, r.postcopy_faults, format_duration(r.throttle_time))
            for label, r in items]
    return Table([first, "outcome", "downtime", "total time", "on the wire", "passes",
                  "post-copy faults", "throttled for"], rows)


def figure(fig):
    from IPython.display import Image

    return Image(plots.png(fig, dpi=80))


def timeline(result: MigrationResult, title: str = ""):
    return figure(plots.result_timeline_figure(result, title))


def lab_or_none() -> tuple[Any, str]:
    from .backends import resolve_backend

    backend, why = resolve_backend()
    if backend != "local lab":
        return None, why
    from ..lab import LocalLab

    return LocalLab(), why


def lab_guest(lab, name: str = "labvm", **params: Any):
    """The notebook's lab guest (made with the panel's lab defaults unless ``params`` say otherwise)."""
    from .labglue import LAB_DEFAULTS, _guest
    from .params import MigrationParams

    return _guest(lab, MigrationParams(backend="local lab", vm=name, **{**LAB_DEFAULTS, **params}))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def copy_race(size: str | int = "64MiB", changed: float = 0.01, block_size: int = 64 << 10,
              seed: int = 1) -> Table:
    """One image, a destination that differs in ``changed`` of its blocks; each tool brings it up to date.

    Ratios are against ``cp`` measured in the same call, on the same files (page cache warm).
    """
    import numpy as np

    from ..blockcopy import delta_copy
    from ..units import parse_size

    nbytes = parse_size(size) // block_size * block_size
    rng = np.random.default_rng(seed)
    work = Path(tempfile.mkdtemp(prefix="labmig-race-"))
    try:
        src, dst, stale = work / "src.img", work / "dst.img", work / "stale.img"
        data = rng.integers(0, 256, nbytes, dtype=np.uint8)
        data.tofile(src)
        blocks = nbytes // block_size
        hit = rng.choice(blocks, max(1, int(blocks * changed)), replace=False)
        old = data.copy().reshape(blocks, block_size)
        old[hit] ^= 0xFF
        old.tofile(stale)

        def fresh() -> None:
            shutil.copyfile(stale, dst)

        def numpy_blocks() -> None:
            a = np.fromfile(src, dtype=np.uint8).reshape(blocks, block_size)
            b = np.memmap(dst, dtype=np.uint8, mode="r+", shape=(blocks, block_size))
            diff = np.flatnonzero((a != b).any(axis=1))
            b[diff] = a[diff]
            b.flush()

        rows, stats = [], None
        tools: list[tuple[str, Any, str]] = [
            ("cp (whole file)", lambda: shutil.copyfile(src, dst), format_size(nbytes)),
            ("labmig delta copy", None, ""),
            ("numpy block compare", numpy_blocks, format_size(len(hit) * block_size)),
        ]
        rsync_literal: list[int] = []

        def rsync() -> None:
            # -I: never skip on equal size and mtime (stale and source can share a second).
            out = subprocess.run(["rsync", "--inplace", "--no-whole-file", "-I", "--stats", str(src), str(dst)],
                                 check=True, capture_output=True, text=True).stdout
            match = re.search(r"Literal data: ([\d,.]+)", out)
            rsync_literal.append(int(match.group(1).replace(",", "").replace(".", "")) if match else -1)

        if shutil.which("rsync"):
            tools.append(("rsync --inplace --no-whole-file -I", rsync, ""))
        for name, fn, wire in tools:
            fresh()
            if fn is None:
                t = time.perf_counter()
                stats = delta_copy(src, dst, block_size=block_size)
                seconds = time.perf_counter() - t
                wire = format_size(stats.bytes_on_wire)
            else:
                seconds = _timed(fn)
                if fn is rsync and rsync_literal and rsync_literal[-1] >= 0:
                    wire = format_size(rsync_literal[-1])
            assert dst.read_bytes() == src.read_bytes(), f"{name} left a different image"
            rows.append([name, f"{seconds * 1000:.1f} ms", wire])
        base = float(rows[0][1].split()[0])
        for row in rows:
            row.append(f"{base / float(row[1].split()[0]):.2f}x")
        return Table(["tool", "time", "data moved", "speed vs cp"], rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
