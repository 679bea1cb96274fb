"""Results as rows and text: one source for what the commands print and the widgets show.

    text_table(rows, header)       rows as aligned text columns (the last one unpadded),
                                   with a rule under the header when there is one; every
                                   text table labmig prints (results, sweeps, comparisons,
                                   notebook tables shown as text) goes through it
    result_text(result)            one MigrationResult as "label  value" lines: what
                                   `labmig simulate`, `migrate live` and `migrate cold` print
    live_vs_cold_rows(live, cold)  the live-vs-cold comparison as (aspect, live, cold) rows;
                                   a side without a run reads NO_RUN. `labmig compare` prints
                                   these rows, the notebook's ComparisonView renders them as HTML
"""
from __future__ import annotations

from typing import Sequence

from .model import MigrationResult
from .units import format_duration, format_rate, format_size

NO_RUN = "(no run yet)"

ASPECTS = (
    "VM state during the migration",
    "downtime",
    "client-seen interruption",
    "total time",
    "bytes on the wire",
    "  of which",
    "passes over memory",
    "network needs",
    "storage needs",
    "CPU",
    "what a failure leaves",
    "outcome",
)


def text_table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Columns padded to their widest cell, two spaces apart; the last column is not padded."""
    lines = ([list(header)] if header is not None else []) + [list(row) for row in rows]
    if not lines:
        return ""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    text = ["  ".join([cell.ljust(w) for cell, w in zip(line, widths, strict=False)] + [line[-1]]) for line in lines]
    if header is not None:
        text.insert(1, "-" * (sum(widths) + 2 * len(widths) + max(len(line[-1]) for line in lines)))
    return "\n".join(text)


def result_text(result: MigrationResult) -> str:
    """The result's summary rows (:meth:`MigrationResult.summary_rows`) as aligned text."""
    return text_table(result.summary_rows())


def _duration(value: float | None) -> str:
    return "not measured" if value is None else format_duration(value)


def _live_column(live: MigrationResult) -> list[str]:
    disk = live.bytes_by_phase.get("disk", 0)
    memory = live.bytes_total - disk
    rate = live.bytes_total / live.total_time if live.total_time else 0.0
    return [
        "running, paused only for the final copy",
        format_duration(live.downtime),
        _duration(live.client_interruption),
        format_duration(live.total_time),
        format_size(live.bytes_total),
        f"memory {format_size(memory)}" + (f", disk {format_size(disk)}" if disk else ""),
        str(live.iterations),
        f"bandwidth > dirty rate (used {format_rate(rate)})",
        "shared, or block migration" + (" (disk copied live)" if disk else ""),
        "destination CPU compatible",
        "VM running on the source",
        str(live.outcome),
    ]


def _cold_column(cold: MigrationResult) -> list[str]:
    disks = cold.extra.get("disks") or []
    blocks = ""
    if disks:
        sent = sum(d.get("blocks_sent", 0) + d.get("blocks_zero", 0) for d in disks)
        total = sum(d.get("blocks_total", 0) for d in disks)
        blocks = f": {sent} of {total} blocks sent"
    shared = bool(cold.extra.get("shared_disks")) and not disks
    return [
        "powered off for the whole migration",
        format_duration(cold.downtime),
        _duration(cold.client_interruption),
        format_duration(cold.total_time),
        format_size(cold.bytes_total),
        f"disk{blocks}",
        "none (the guest reboots)",
        "any link; time grows with changed blocks",
        "nothing shared" + (" (disks shared: not copied)" if shared else "; room on the destination"),
        "any CPU the guest boots on",
        "VM on the source, disk untouched",
        str(cold.outcome),
    ]


def live_vs_cold_rows(live: MigrationResult | None, cold: MigrationResult | None) -> list[tuple[str, str, str]]:
    """(aspect, live, cold) rows comparing a live and a cold run; a missing run reads NO_RUN."""
    live_cells = _live_column(live) if live is not None else [NO_RUN] * len(ASPECTS)
    cold_cells = _cold_column(cold) if cold is not None else [NO_RUN] * len(ASPECTS)
    return list(zip(ASPECTS, live_cells, cold_cells, strict=True))
