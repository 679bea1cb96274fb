"""HTML tables of results for the widgets and notebooks (plain strings, no ipywidgets).

    result_table_html(result, prediction)  one run: measured figures, the simulator's beside them
    comparison_rows(results)               the live-vs-cold table (the rows `labmig compare` prints)
                                           for the latest run of each kind
    comparison_table_html(results)         those rows as HTML, plus one line per run
    Table                                  rows with an HTML repr, for a notebook cell's last line

Cells carry ``data-field`` attributes (``downtime``, ``total_time``, ``bytes_total``…) and the
raw number in ``data-value`` so a browser test can read exactly what is shown.
"""
from __future__ import annotations

from html import escape
from typing import Sequence

from ..model import MigrationResult, Outcome
from ..report import live_vs_cold_rows, text_table
from ..units import format_duration, format_size
from .controller import outcome_words

_STYLE = ("<style>.labmig-table{border-collapse:collapse;font-size:13px;margin:4px 0}"
          ".labmig-table td,.labmig-table th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
          ".labmig-table th{background:#f2f2f2}</style>")


def _cell(field: str, text: str, value: float | str | None) -> str:
    raw = "" if value is None else f' data-value="{escape(str(value))}"'
    return f'<td data-field="{field}"{raw}>{escape(text)}</td>'


def _measured_fields(result: MigrationResult) -> list[tuple[str, str, str, float | str | None]]:
    """(field, label, text, raw value) for the result table."""
    rows = [
        ("outcome", "outcome", str(result.outcome), str(result.outcome)),
        ("where", "where the VM is", outcome_words(result), None),
        ("downtime", "downtime", format_duration(result.downtime), result.downtime),
        ("total_time", "total time", format_duration(result.total_time), result.total_time),
        ("bytes_total", "bytes on the wire", format_size(result.bytes_total), result.bytes_total),
        ("iterations", "passes", str(result.iterations), result.iterations),
    ]
    ci = result.client_interruption
    rows.insert(3, ("client_interruption", "client-seen interruption",
                    format_duration(ci) if ci is not None else "not measured", ci))
    if result.postcopy_faults:
        rows.append(("postcopy_faults", "post-copy faults", str(result.postcopy_faults), result.postcopy_faults))
    if result.max_throttle_pct:
        rows.append(("max_throttle_pct", "max vCPU throttle", f"{result.max_throttle_pct:.0f} %",
                     result.max_throttle_pct))
    return rows


def result_table_html(result: MigrationResult, prediction: MigrationResult | None = None) -> str:
    """The run's figures; with ``prediction``, the simulator's figures in a second column."""
    head = "<tr><th></th><th>measured</th>" + ("<th>simulator predicted</th>" if prediction else "") + "</tr>"
    predicted = {f: (text, raw) for f, _, text, raw in _measured_fields(prediction)} if prediction else {}
    body = []
    for field, label, text, raw in _measured_fields(result):
        row = f"<tr><th>{escape(label)}</th>{_cell(field, text, raw)}"
        if prediction is not None:
            ptext, praw = predicted.get(field, ("", None))
            row += _cell("predicted_" + field, ptext, praw)
        body.append(row + "</tr>")
    caption = (f"<caption>{escape(result.kind)} migration of {escape(result.vm or 'the VM')} "
               f"({escape(result.strategy)}, {escape(result.backend)}): {escape(result.message)}</caption>")
    return (f'{_STYLE}<table class="labmig-table labmig-result" data-outcome="{result.outcome}">'
            f"{caption}{head}{''.join(body)}</table>")


def _best(results: Sequence[MigrationResult], kind: str) -> MigrationResult | None:
    """The latest completed run of a kind, else the latest run of it."""
    of_kind = [r for r in results if r.kind == kind]
    done = [r for r in of_kind if r.outcome == Outcome.COMPLETED]
    latest = done or of_kind
    return latest[-1] if latest else None


def comparison_rows(results: Sequence[MigrationResult]) -> list[tuple[str, str, str]]:
    """The live-vs-cold table (:func:`labmig.report.live_vs_cold_rows`) of the latest run of each kind."""
    return live_vs_cold_rows(_best(results, "live"), _best(results, "cold"))


def comparison_table_html(results: Sequence[MigrationResult]) -> str:
    rows = "".join(
        f"<tr><th>{escape(label)}</th><td data-kind='live'>{escape(live)}</td>"
        f"<td data-kind='cold'>{escape(cold)}</td></tr>"
        for label, live, cold in comparison_rows(results))
    table = (f'<table class="labmig-table labmig-compare"><tr><th></th><th>live</th><th>cold</th></tr>'
             f"{rows}</table>")
    runs = "".join(
        f"<tr><td>{i}</td><td>{escape(r.kind)}</td><td>{escape(r.strategy)}</td><td>{escape(r.backend)}</td>"
        f"<td>{r.outcome}</td><td>{format_duration(r.downtime)}</td><td>{format_duration(r.total_time)}</td>"
        f"<td>{format_size(r.bytes_total)}</td></tr>"
        for i, r in enumerate(results, 1))
    history = ('<table class="labmig-table labmig-runs"><tr><th>#</th><th>kind</th><th>strategy</th>'
               "<th>backend</th><th>outcome</th><th>downtime</th><th>total time</th><th>on the wire</th></tr>"
               f"{runs}</table>")
    return _STYLE + table + history


class Table:
    """Rows that show as an HTML table in a notebook and as text elsewhere."""

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.header = list(header)
        self.rows = [list(r) for r in rows]

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{escape(str(h))}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in self.rows)
        return f'{_STYLE}<table class="labmig-table"><tr>{head}</tr>{body}</table>'

    def __repr__(self) -> str:
        return text_table([[str(c) for c in row] for row in self.rows], header=[str(h) for h in self.header])
