"""The panel on the real local lab: a migration from the panel, and Abort from the panel.

Needs the lab ($LABMIG_LAB, brought up by `make test`; run alone, the ``lab`` fixture brings
it up). Where the VM is afterwards is asked of libvirt on both hosts, not of labmig's own result.
The panel makes its VM; the lab guard (tests/conftest.py) removes it after each test.
"""
from __future__ import annotations

import threading

import pytest

from labmig.model import Outcome
from labstate import describe, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]

VM = "uipanel"


@pytest.fixture
def panel(lab):
    """A panel on the test lab ($LABMIG_LAB, set for the session by tests/conftest.py)."""
    pytest.importorskip("ipywidgets")
    from labmig.widgets.views import MigrationPanel

    return MigrationPanel(backend="local lab", vm=VM, memory="256MiB", working_set="64MiB",
                          dirty_rate="4MiB/s", max_bandwidth="32MiB/s")


def _states(lab) -> dict[str, str]:
    return lab.guest(VM).where()


def _wait(run, lab, timeout: float):
    """The run's result; a run still going after ``timeout`` s fails the test with the lab's state."""
    try:
        return run.wait(timeout=timeout)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{describe(lab)}", pytrace=False)


def test_migrate_from_the_panel_moves_the_vm_and_shows_measured_figures(lab, panel):
    panel.migrate_button.click()
    run = panel.controller.current
    result = _wait(run, lab, 300)
    assert result.completed, result.message
    source, destination = run.params.source, run.params.destination
    assert _states(lab) == {destination: "running"}, "the VM must run on the destination only"
    assert result.backend == "libvirt" and len(result.timeline) >= 2
    assert 0 < result.downtime < result.total_time
    assert result.client_interruption is not None and result.client_interruption > 0
    assert run.prediction is not None and run.prediction.backend == "sim"
    assert f'data-value="{result.downtime}"' in panel.result.value
    assert "simulator predicted" in panel.result.value
    assert lab.guest(VM).console(destination).memory_errors == []
    assert source != destination


def test_abort_from_the_panel_leaves_the_vm_on_the_source(lab, panel):
    # Dirtying faster than the capped link: pre-copy cannot converge, so Abort comes in time.
    panel.dirty_rate.value = "24MiB/s"
    panel.working_set.value = "96MiB"
    panel.max_bandwidth.value = "4MiB/s"
    started = threading.Event()
    panel.controller.observe(lambda event, run: event == "point" and len(run.points) >= 5 and started.set())
    panel.migrate_button.click()
    run = panel.controller.current
    source, destination = run.params.source, run.params.destination
    wait_until(lambda: started.is_set() or not run.running, 120, "five timeline points of the running migration", lab)
    assert started.is_set(), f"the migration ended before its fifth point: {run.wait(timeout=0).message}"
    assert run.running
    panel.abort_button.click()
    result = _wait(run, lab, 180)
    assert result.outcome in (Outcome.ABORTED, Outcome.ROLLED_BACK), result.message
    assert _states(lab) == {source: "running"}, "the VM must run on the source only"
    assert 'data-outcome="%s"' % result.outcome in panel.result.value
    assert f"runs on {source}" in panel.result.value
    # The next attempt from the same panel succeeds.
    panel.dirty_rate.value = "2MiB/s"
    panel.max_bandwidth.value = "64MiB/s"
    panel.migrate_button.click()
    again = _wait(panel.controller.current, lab, 300)
    assert again.completed, again.message
    assert _states(lab) == {destination: "running"}
