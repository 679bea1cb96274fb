"""labmig.report: the one text formatter of a result and the one live-vs-cold table.

The CLI (`labmig simulate`, `migrate live`, `migrate cold`, `compare`) and the widgets all
draw from these functions, so the tests here pin the shape every caller shows.
"""
import io
from dataclasses import replace

import pytest

from labmig import report
from labmig.commands.simulate import print_result
from labmig.compare import compare_simulated
from labmig.fsutil import fsync_dir
from labmig.model import Outcome
from labmig.widgets import tables


def test_text_table_pads_every_column_but_the_last_and_rules_the_header():
    text = report.text_table([("a", "bb", "c"), ("ccc", "d", "eeeee")], header=("", "x", "y"))
    assert text.splitlines() == [
        "     x   y",
        "-" * (3 + 2 + 2 + 2 + 5),
        "a    bb  c",
        "ccc  d   eeeee",
    ]
    assert report.text_table([]) == ""


def test_result_text_is_the_summary_rows_aligned():
    result = compare_simulated().live
    rows = result.summary_rows()
    lines = report.result_text(result).splitlines()
    width = max(len(label) for label, _ in rows)
    assert len(lines) == len(rows)
    for line, (label, value) in zip(lines, rows):
        assert line == label.ljust(width) + "  " + value
    out = io.StringIO()
    print_result(result, out)
    assert out.getvalue() == report.result_text(result) + "\n"


def test_compare_and_the_widget_show_the_same_rows():
    comp = compare_simulated()
    assert comp.rows() == tables.comparison_rows([comp.live, comp.cold])
    assert [aspect for aspect, _, _ in comp.rows()] == list(report.ASPECTS)
    rendered = comp.render().splitlines()
    assert rendered[0].split() == ["live", "cold"]
    assert len(rendered) >= 2 + len(report.ASPECTS)


def test_a_missing_side_reads_no_run_yet_and_the_other_is_filled():
    live = compare_simulated().live
    rows = report.live_vs_cold_rows(live, None)
    assert all(cold == report.NO_RUN for _, _, cold in rows)
    assert dict((a, lv) for a, lv, _ in rows)["outcome"] == "completed"
    failed = replace(live, outcome=Outcome.ABORTED, client_interruption=None)
    cells = dict((a, lv) for a, lv, _ in report.live_vs_cold_rows(failed, None))
    assert cells["outcome"] == "aborted" and cells["client-seen interruption"] == "not measured"


def test_fsync_dir_syncs_a_directory_and_refuses_a_file(tmp_path):
    fsync_dir(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "f")


def test_notebook_tables_print_as_text_the_same_way():
    table = tables.Table(["a", "bbb"], [[1, 2], [333, "x"]])
    assert repr(table).splitlines() == ["a    bbb", "--------", "1    2", "333  x"]
