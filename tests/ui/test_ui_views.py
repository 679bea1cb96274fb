"""The ipywidgets views driven from Python (no browser): what they show after a run and an abort."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("ipywidgets", reason="the `ui` extra is not installed")

from labmig.model import Outcome  # noqa: E402
from labmig.widgets import backends  # noqa: E402
from labmig.widgets.views import ComparisonView, MigrationPanel  # noqa: E402
from test_ui_controller import HoldAfterThirdPoint, ReplayBackend, synthetic_run  # noqa: E402

PNG_MAGIC = b"\x89PNG"


@pytest.fixture
def panel(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "test", ReplayBackend)
    monkeypatch.setitem(backends.BACKENDS, "simulator", ReplayBackend)
    return MigrationPanel(backend="test", playback=0.0)


def test_migrate_button_fills_progress_timeline_and_result(panel):
    panel.memory.value = "2GiB"
    panel.migrate_button.click()
    result = panel.controller.current.wait(10)
    assert panel.controller.params.memory == "2GiB"  # the form reached the controller
    assert result == synthetic_run(panel.controller.params)
    assert panel.progress.value == 1.0 and panel.progress.bar_style == "success"
    assert bytes(panel.timeline.value[:4]) == PNG_MAGIC
    assert "labmig-result" in panel.result.value
    assert f'data-value="{result.downtime}"' in panel.result.value
    assert "simulator predicted" in panel.result.value
    assert panel.phase.value.startswith("<b>completed</b>")
    assert not panel.migrate_button.disabled and panel.abort_button.disabled


def test_abort_button_stops_the_run_and_says_where_the_vm_is(panel, monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "test", HoldAfterThirdPoint)
    third = threading.Event()
    panel.controller.observe(lambda e, run: len(run.points) >= 3 and third.set())
    panel.migrate_button.click()
    assert panel.migrate_button.disabled and not panel.abort_button.disabled
    assert third.wait(10)
    panel.abort_button.click()
    result = panel.controller.current.wait(10)
    assert result.outcome == Outcome.ABORTED
    assert 'data-outcome="aborted"' in panel.result.value
    assert "runs on lab1" in panel.result.value
    assert panel.progress.bar_style == "warning"


def test_bad_input_is_shown_not_raised(panel):
    panel.link_rate.value = "lots"
    assert panel.migrate() is None
    assert "cannot read rate" in panel.phase.value
    assert panel.controller.runs == []


def test_comparison_view_accumulates_runs(panel):
    view = ComparisonView(panel.controller)
    assert "(no run yet)" in view.table.value
    panel.controller.migrate(timeout=10)
    panel.controller.migrate(timeout=10, kind="cold", strategy="cold")
    assert view.table.value.count("<td>completed</td>") == 2
    assert "(no run yet)" not in view.table.value
    assert bytes(view.plot.value[:4]) == PNG_MAGIC
