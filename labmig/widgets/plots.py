"""Matplotlib figures of runs, drawn without pyplot so any thread may draw them.

    timeline_figure(points)   remaining memory, dirty rate vs bandwidth, throttle — per pass
    result_timeline_figure(result)  that figure for a finished run, its turning points marked
                              (the panel, the notebooks and `labmig simulate --plot` draw this one)
    comparison_figure(runs)   downtime, total time and bytes on the wire of each run, as bars
    sweep_figure(x, results)  a figure across runs as a line (downtime / total time vs a parameter)
    png(figure)               PNG bytes for an ipywidgets.Image (what the views show)
"""
from __future__ import annotations

import io
from typing import Sequence

from matplotlib.figure import Figure

from ..model import Event, MigrationResult, TimelinePoint

MiB = 2**20
PHASE_COLOURS = {
    "precopy": "#4c72b0", "stop-and-copy": "#c44e52", "postcopy": "#8172b2",
    "disk": "#55a868", "shutdown": "#937860", "boot": "#ccb974",
}
# Events drawn as dotted vertical lines across the timeline: where a run changed course.
MARKED_EVENTS = ("switchover", "postcopy-start", "completion-timeout")


def png(figure: Figure, dpi: int = 80) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=dpi, bbox_inches="tight")
    return out.getvalue()


def timeline_figure(points: Sequence[TimelinePoint], title: str = "", width: float = 7.5,
                    start_bytes: int | None = None, events: Sequence[Event] = ()) -> Figure:
    """Three stacked panels sharing the time axis; phases coloured in the top one.

    ``start_bytes`` (the VM's memory, say) draws what was left at t = 0, before the first sample;
    ``events`` of the kinds in MARKED_EVENTS are drawn as dotted lines.
    """
    # libvirt's first polls may come before QEMU has counted anything: nothing to draw yet.
    first = next((i for i, p in enumerate(points) if p.remaining_bytes or p.bytes_sent_total), len(points))
    points = list(points[first:])
    fig = Figure(figsize=(width, 4.6))
    ax_left, ax_rate, ax_throttle = fig.subplots(3, 1, sharex=True,
                                                 gridspec_kw={"height_ratios": [2, 1.6, 1]})
    t = [p.t for p in points]
    left = [p.remaining_bytes / MiB for p in points]
    if start_bytes is not None:
        ax_left.plot([0.0] + t, [start_bytes / MiB] + left, color="black", lw=1, alpha=0.5)
        ax_left.set_xlim(left=0.0)
    else:
        ax_left.plot(t, left, color="black", lw=1, alpha=0.5)
    for phase, colour in PHASE_COLOURS.items():
        sel = [p for p in points if p.phase == phase]
        if sel:
            ax_left.plot([p.t for p in sel], [p.remaining_bytes / MiB for p in sel], "o",
                         ms=3.5, color=colour, label=phase)
    ax_left.set_ylabel("left to send\n(MiB)")
    if points:
        ax_left.legend(loc="upper right", fontsize=7, ncol=3)
    ax_rate.step(t, [p.dirty_rate / MiB for p in points], where="post", color="#dd8452", label="dirty rate")
    ax_rate.step(t, [p.bandwidth / MiB for p in points], where="post", color="#4c72b0", label="bandwidth")
    ax_rate.set_ylabel("MiB/s")
    ax_rate.legend(loc="upper right", fontsize=7)
    ax_throttle.step(t, [p.throttle_pct for p in points], where="post", color="#c44e52")
    ax_throttle.set_ylabel("throttle\n(%)")
    ax_throttle.set_ylim(0, 100)
    ax_throttle.set_xlabel("time since start (s)")
    for ax in (ax_left, ax_rate, ax_throttle):
        ax.grid(True, alpha=0.3)
        for event in events:
            if event.kind in MARKED_EVENTS:
                ax.axvline(event.t, color="grey", linestyle=":")
    if title:
        ax_left.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def result_timeline_figure(result: MigrationResult, title: str = "", width: float = 7.5) -> Figure:
    """A finished run's timeline; a live run's starts from its whole memory left to send."""
    start = result.memory_bytes or None
    return timeline_figure(result.timeline, title or f"{result.strategy}: {result.message}", width=width,
                           start_bytes=start if result.kind == "live" else None, events=result.events)


def run_label(result: MigrationResult, index: int | None = None) -> str:
    prefix = f"#{index} " if index is not None else ""
    return f"{prefix}{result.kind}/{result.strategy}"


def comparison_figure(results: Sequence[MigrationResult], width: float = 7.5) -> Figure:
    """One bar per run in each of three panels: downtime, total time, bytes on the wire."""
    fig = Figure(figsize=(width, 2.8))
    axes = fig.subplots(1, 3)
    labels = [run_label(r, i + 1) for i, r in enumerate(results)]
    colours = ["#4c72b0" if r.kind == "live" else "#dd8452" for r in results]
    series = (
        ("downtime (s)", [r.downtime for r in results]),
        ("total time (s)", [r.total_time for r in results]),
        ("on the wire (MiB)", [r.bytes_total / MiB for r in results]),
    )
    for ax, (name, values) in zip(axes, series, strict=True):
        ax.bar(range(len(values)), values, color=colours)
        ax.set_xticks(range(len(values)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def sweep_figure(x: Sequence[float], results: Sequence[MigrationResult], xlabel: str,
                 width: float = 7.5) -> Figure:
    """Downtime and total time of runs against one swept parameter (log scale for time)."""
    fig = Figure(figsize=(width, 3.0))
    ax_down, ax_total = fig.subplots(1, 2)
    ok = [(xi, r) for xi, r in zip(x, results, strict=True) if r.completed]
    bad = [(xi, r) for xi, r in zip(x, results, strict=True) if not r.completed]
    ax_down.plot([xi for xi, _ in ok], [r.downtime for _, r in ok], "o-", label="completed")
    ax_total.plot([xi for xi, _ in ok], [r.total_time for _, r in ok], "o-")
    if bad:
        ax_down.plot([xi for xi, _ in bad], [r.downtime for _, r in bad], "x", color="#c44e52",
                     label="did not complete")
    ax_down.set_ylabel("downtime (s)")
    ax_total.set_ylabel("total time (s)")
    for ax in (ax_down, ax_total):
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    ax_down.legend(fontsize=7)
    fig.tight_layout()
    return fig
