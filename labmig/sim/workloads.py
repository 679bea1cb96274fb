"""Workloads: what the guest writes, as sets of dirtied pages per interval.

    WORKLOADS                name -> class; feeds the CLI and widgets
    Workload                 base: ``touch(dt, speed, sink)`` emits the distinct pages
    ├── IdleWorkload         writes nothing
    ├── UniformWorkload      random page writes over the working set
    ├── HotColdWorkload      two uniform sets: a hot share of writes on a small set
    ├── SequentialWorkload   a memory-muncher sweeping the working set in order
    └── TraceWorkload        replays recorded per-interval dirty counts or bitmaps

The working set is the first ``wss`` bytes of guest memory; zero pages (never
written) are at its top. ``touch`` hands the pages dirtied in an interval of
``dt`` seconds to ``sink`` as sorted int64 index arrays, a chunk at a time,
never page by page; the engine sets them in the dirty log with the core's
``set_bits``. ``speed`` (0..1) is the share of the interval the guest's vCPUs
actually run (auto-converge throttle, post-copy fault stalls).

Uniform writes are a Poisson stream of ``r`` page writes a second, each on a
page drawn uniformly from the ``W`` pages of the working set. Poisson thinning
makes the number of writes each page receives in ``dt`` independent and
Poisson(``r dt / W``), so every page is dirtied independently with probability
``1 - exp(-r dt / W)``: the set of distinct dirtied pages is drawn exactly, by
geometric gaps between successive dirty pages (cost grows with the pages
dirtied, not with memory), and over a time ``t`` the dirty share of the
working set saturates as ``1 - exp(-λ t)`` with ``λ = r / W``.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np

from .. import core
from ..errors import InvalidInput
from .plan import Plan

log = logging.getLogger(__name__)

Sink = Callable[[np.ndarray], None]
CHUNK = 1 << 20


def bernoulli_pages(rng: np.random.Generator, nitems: int, p: float, offset: int, sink: Sink) -> int:
    """Emit each of ``nitems`` pages (from ``offset``) independently with probability ``p``."""
    if nitems <= 0 or p <= 0.0:
        return 0
    emitted = 0
    if p >= 1.0:
        for lo in range(0, nitems, CHUNK):
            idx = np.arange(offset + lo, offset + min(nitems, lo + CHUNK), dtype=np.int64)
            sink(idx)
            emitted += len(idx)
        return emitted
    if p > 0.25:
        # Dense: one uniform draw per page, still a chunk at a time.
        for lo in range(0, nitems, CHUNK):
            n = min(CHUNK, nitems - lo)
            idx = np.flatnonzero(rng.random(n, dtype=np.float32) < np.float32(p)).astype(np.int64)
            idx += offset + lo
            sink(idx)
            emitted += len(idx)
        return emitted
    if p * nitems < 1.0:
        # Very sparse: how many (Binomial), then which (a uniform subset).
        k = int(rng.binomial(nitems, p))
        if k:
            sink(np.sort(rng.choice(nitems, k, replace=False)).astype(np.int64) + offset)
        return k
    # Sparse: gaps between successive chosen pages are Geometric(p).
    pos = -1
    while True:
        size = int(min(CHUNK, (nitems - pos) * p * 1.05 + 64))
        cum = pos + np.cumsum(rng.geometric(p, size))
        cut = int(np.searchsorted(cum, nitems))
        if cut:
            idx = cum[:cut] + offset
            sink(idx.astype(np.int64, copy=False))
            emitted += cut
        if cut < size:
            return emitted
        pos = int(cum[-1])


class Workload:
    """Base class. ``pages`` is the VM's page count, ``wss`` the working set in pages."""

    name = "base"
    description = ""

    def __init__(self, plan: Plan, rng: np.random.Generator) -> None:
        self.plan = plan
        self.rng = rng
        self.pages = plan.vm.pages
        self.zero = int(plan.workload.zero_fraction * self.pages)
        # Zero pages are never written: the working set stops below them.
        self.wss = max(1, min(plan.wss_pages, self.pages - self.zero))
        self.write_rate = plan.workload.dirty_rate / plan.vm.page_size  # page writes per second

    def touch(self, dt: float, speed: float, sink: Sink) -> int:
        """Dirty the pages written in the next ``dt`` seconds; return how many were emitted."""
        raise NotImplementedError

    def zero_pages_from(self) -> int:
        """First page of the zero region at the top of memory (``pages`` when there is none)."""
        return max(self.wss, self.pages - self.zero)


class IdleWorkload(Workload):
    name = "idle"
    description = "writes nothing"

    def touch(self, dt: float, speed: float, sink: Sink) -> int:
        return 0


class UniformWorkload(Workload):
    name = "uniform"
    description = "random page writes at dirty_rate over the working set"

    def touch(self, dt: float, speed: float, sink: Sink) -> int:
        mean_writes = self.write_rate * dt * speed
        p = -math.expm1(-mean_writes / self.wss)
        return bernoulli_pages(self.rng, self.wss, p, 0, sink)


class HotColdWorkload(Workload):
    name = "hotcold"
    description = "hot_share of the writes on the first hot_fraction of the working set"

    def touch(self, dt: float, speed: float, sink: Sink) -> int:
        wl = self.plan.workload
        hot = max(1, min(self.wss, int(round(self.wss * wl.hot_fraction))))
        cold = self.wss - hot
        writes = self.write_rate * dt * speed
        count = bernoulli_pages(self.rng, hot, -math.expm1(-writes * wl.hot_share / hot), 0, sink)
        if cold:
            count += bernoulli_pages(self.rng, cold, -math.expm1(-writes * (1 - wl.hot_share) / cold), hot, sink)
        return count


class SequentialWorkload(Workload):
    """Writes sweep the working set in address order and wrap around.

    Until it wraps, every write dirties a page not yet written in the
    interval, so it dirties exactly ``dirty_rate / page_size`` distinct pages
    a second: the workload of the closed-form model (see :mod:`labmig.sim.analytic`).
    """

    name = "sequential"
    description = "streams through the working set in order (memory-muncher)"

    def __init__(self, plan: Plan, rng: np.random.Generator) -> None:
        super().__init__(plan, rng)
        self.cursor = 0.0

    def touch(self, dt: float, speed: float, sink: Sink) -> int:
        start = math.floor(self.cursor)
        end_pos = self.cursor + self.write_rate * dt * speed
        count = math.floor(end_pos) - start
        self.cursor = math.fmod(end_pos, self.wss)
        if count <= 0:
            return 0
        if count >= self.wss:
            return bernoulli_pages(self.rng, self.wss, 1.0, 0, sink)
        start %= self.wss
        first = min(count, self.wss - start)
        sink(np.arange(start, start + first, dtype=np.int64))
        if count > first:
            sink(np.arange(0, count - first, dtype=np.int64))
        return count


class TraceWorkload(Workload):
    """Replays a recorded run, looping when the trace ends.

    JSON: ``{"interval": 1.0, "dirty_pages": [n0, n1, …]}`` — distinct pages
    dirtied in each interval (as QEMU's dirty-rate measurement reports); or a
    saved MigrationResult (``labmig migrate … --json`` of a real lab run): its
    timeline's ``dirty_rate`` over each interval between samples. Within an
    interval the pages are drawn uniformly from the working set.
    ``.npz``: arrays ``interval`` and ``bitmaps`` (one dirty bitmap per row,
    over the VM's pages): each row is applied when its interval starts.
    """

    name = "trace"
    description = "replays recorded per-interval dirty counts (JSON) or bitmaps (.npz)"

    def __init__(self, plan: Plan, rng: np.random.Generator) -> None:
        super().__init__(plan, rng)
        self.t = 0.0
        self.bitmaps: np.ndarray | None = None
        path = Path(plan.workload.trace)
        if not plan.workload.trace or not path.is_file():
            raise InvalidInput(f"trace file {plan.workload.trace!r} not found",
                               "give --trace FILE.json (interval, dirty_pages) or FILE.npz (interval, bitmaps)")
        try:
            if path.suffix == ".npz":
                with np.load(path) as data:
                    self.interval = float(data["interval"])
                    self.bitmaps = np.ascontiguousarray(data["bitmaps"], dtype=np.uint64)
                if self.bitmaps.ndim != 2 or self.bitmaps.shape[1] != (self.pages + 63) // 64:
                    raise InvalidInput(f"trace {path} has bitmaps of shape {self.bitmaps.shape}",
                                       f"each row must cover the VM's {self.pages} pages "
                                       f"({(self.pages + 63) // 64} uint64 words)")
                self.length = len(self.bitmaps)
            else:
                data = json.loads(path.read_text())
                if isinstance(data, dict) and "timeline" in data:
                    points = [p for p in data["timeline"] if p.get("phase", "precopy") == "precopy"]
                    times = np.asarray([0.0] + [float(p["t"]) for p in points])
                    rates = np.asarray([float(p.get("dirty_rate", 0.0)) for p in points]) / plan.vm.page_size
                else:
                    interval = float(data["interval"])
                    counts = np.asarray(data["dirty_pages"], dtype=np.float64)
                    times = np.arange(len(counts) + 1) * interval
                    rates = counts / interval if interval > 0 else counts
                self._set_segments(times, rates)
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise InvalidInput(f"cannot read trace {path}: {exc}",
                               "JSON needs interval and dirty_pages (or a saved result with a timeline); "
                               ".npz needs interval and bitmaps") from exc
        if self.interval <= 0 or self.length == 0:
            raise InvalidInput(f"trace {path} is empty or has a non-positive interval",
                               "record at least one interval of more than 0 s")

    def _set_segments(self, times: np.ndarray, rates: np.ndarray) -> None:
        """Piecewise-constant dirty rates (pages/s) between ``times``; looped."""
        widths = np.diff(times)
        keep = widths > 0
        self.edges = np.concatenate(([0.0], np.cumsum(widths[keep])))
        self.rates = np.maximum(rates[keep], 0.0)
        self.cumulative = np.concatenate(([0.0], np.cumsum(self.rates * widths[keep])))
        self.length = len(self.rates)
        self.interval = float(self.edges[-1]) if self.length else 0.0

    def _integral(self, t: float) -> float:
        """Pages the trace dirties (counted per interval) from time 0 to ``t``."""
        period = self.edges[-1]
        loops, rest = divmod(t, period)
        j = min(int(np.searchsorted(self.edges, rest, side="right")) - 1, self.length - 1)
        return float(loops * self.cumulative[-1] + self.cumulative[j] + self.rates[j] * (rest - self.edges[j]))

    def touch(self, dt: float, speed: float, sink: Sink) -> int:
        t0, t1 = self.t, self.t + dt * speed
        self.t = t1
        if self.bitmaps is not None:
            first, last = int(t0 // self.interval), int(math.ceil(t1 / self.interval))
            count = 0
            out = np.empty(min(CHUNK, self.pages), dtype=np.int64)
            for i in range(first, last):
                if not t0 <= i * self.interval < t1:
                    continue
                row, start = self.bitmaps[i % self.length], 0
                while start < self.pages:
                    n, start = core.find_set_bits(row, self.pages, start, out)
                    if n:
                        sink(out[:n].copy())
                        count += n
            return count
        expected = self._integral(t1) - self._integral(t0)
        return bernoulli_pages(self.rng, self.wss, min(1.0, expected / self.wss), 0, sink)


WORKLOADS: dict[str, type[Workload]] = {
    cls.name: cls for cls in (IdleWorkload, UniformWorkload, HotColdWorkload, SequentialWorkload, TraceWorkload)
}


def make_workload(plan: Plan, rng: np.random.Generator) -> Workload:
    try:
        cls = WORKLOADS[plan.workload.kind]
    except KeyError:
        raise InvalidInput(f"unknown workload {plan.workload.kind!r}",
                           f"choose one of: {', '.join(WORKLOADS)}") from None
    return cls(plan, rng)
