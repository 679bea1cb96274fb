"""Notebook 01 in a real browser: JupyterLab started here, Debian's Chromium driven by Playwright.

Runs every cell, presses Migrate on the panel, waits for the result table and checks the figures
it shows: against the simulator re-run here with the parameters read off the form (it is
deterministic) when the panel used the simulator, against the run's own invariants on the lab.
Saves screenshots of the panel in build/ui-screenshots/. JupyterLab and its kernels use the
test lab ($LABMIG_LAB, set for the session by tests/conftest.py), never labmig's default lab.
"""
from __future__ import annotations

import os
import re
import time

import pytest

from labstate import TEST_LAB, cmdline, descendants, environment
from ui_harness import CHROMIUM, REPO, JupyterLabServer, chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "01-live-vs-cold.ipynb"
SHOTS = REPO / "build" / "ui-screenshots"
FORM_FIELDS = ("vm", "source", "destination", "memory", "working set", "dirty rate", "link rate",
               "max bandwidth", "max downtime", "disk")


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing: scripts/install-system-packages.sh installs it"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is missing: install labmig's `ui` extra"
    return None


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """`jupyter lab` serving a copy of the notebooks, for this module."""
    problem = _missing()
    if problem:
        pytest.fail(problem)  # CI installs both; a silent skip would hide a broken set-up
    with JupyterLabServer(tmp_path_factory.mktemp("jupyterlab")) as server:
        yield server


@pytest.fixture(scope="module")
def page(jupyterlab, tmp_path_factory):
    """Notebook 01 open in Chromium with every cell run."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium(tmp_path_factory.mktemp("chromium")) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1800})
        try:
            page.goto(jupyterlab.lab_url(NOTEBOOK))
            page.wait_for_selector(".jp-Notebook", timeout=120_000)
            _run_all_cells(page)
            yield page
        finally:
            page.screenshot(path=str(SHOTS / "last-state.png"))


def _wait_for_kernel(page) -> None:
    select = page.locator(".jp-Dialog").get_by_role("button", name="Select")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if select.count():  # JupyterLab may still ask which kernel to start
            select.first.click()
        if page.locator(".jp-StatusBar-TextItem", has_text="Python 3 (ipykernel) | Idle").count():
            return
        page.wait_for_timeout(250)
    raise TimeoutError("the notebook's kernel did not start within 120 s")


def _run_all_cells(page) -> None:
    _wait_for_kernel(page)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
    # Done when every code cell has its execution number (no "[*]" or "[ ]" left).
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=600_000,
    )


def _form_value(panel, label: str) -> str:
    return panel.locator(".widget-text", has_text=label).locator("input").first.input_value()


def _set_form_value(panel, label: str, value: str) -> None:
    box = panel.locator(".widget-text", has_text=label).locator("input").first
    box.fill(value)
    box.press("Tab")  # ipywidgets' Text syncs on blur / enter


def _shown(table, field: str) -> str:
    return table.locator(f'td[data-field="{field}"]').get_attribute("data-value")


def _runs_so_far(panel) -> int:
    marker = panel.locator(".labmig-run")
    return int(marker.get_attribute("data-run")) if marker.count() else 0


def test_notebook_01_runs_clean_in_jupyterlab(page):
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                          has_text="Traceback")
    assert errors.count() == 0, errors.first.inner_text()
    assert page.locator(".labmig-comparison .labmig-compare").count() == 1


def test_jupyterlab_and_its_kernel_use_the_test_lab(jupyterlab, page):
    server = jupyterlab.proc.pid
    kernels = [pid for pid in descendants(server) if "ipykernel" in cmdline(pid)]
    assert kernels, f"no kernel runs under JupyterLab: {[cmdline(p) for p in descendants(server)]}"
    for pid in [server, *kernels]:
        assert environment(pid).get("LABMIG_LAB") == TEST_LAB, cmdline(pid)
    # What the kernel itself resolved: the panel names the lab it looked for.
    status = page.locator(".labmig-panel").first.locator(".widget-html", has_text="lab").first.inner_text()
    if os.geteuid() == 0:
        assert f"lab '{TEST_LAB}'" in status, status


def test_migrate_button_shows_checked_result_and_timeline(page):
    panel = page.locator(".labmig-panel").first
    panel.scroll_into_view_if_needed()
    expected_run = _runs_so_far(panel) + 1
    backend = panel.locator("select").first.input_value()
    panel.get_by_role("button", name="live", exact=True).click()
    panel.get_by_role("button", name="Migrate").click()
    table = panel.locator(f'.labmig-run[data-run="{expected_run}"] .labmig-result')
    table.wait_for(timeout=600_000)
    timeline = panel.locator("img").first
    timeline.scroll_into_view_if_needed()
    page.wait_for_function("img => img.naturalWidth > 300", arg=timeline.element_handle(), timeout=30_000)
    panel.screenshot(path=str(SHOTS / "panel.png"))
    page.screenshot(path=str(SHOTS / "notebook-01.png"))

    params = {label: _form_value(panel, label) for label in FORM_FIELDS}
    downtime = float(_shown(table, "downtime"))
    total = float(_shown(table, "total_time"))
    wire = int(_shown(table, "bytes_total"))
    assert table.get_attribute("data-outcome") == "completed", table.inner_text()
    assert 0 < downtime < total
    assert "runs on " + params["destination"] in table.inner_text()
    if backend == "simulator":
        _check_against_simulator(panel, params, downtime, total, wire, table)
    else:
        from labmig.units import parse_size
        # Pre-copy sends all of the guest's memory at least once (zero pages aside).
        assert wire > 0.05 * parse_size(params["memory"])
        assert _shown(table, "predicted_downtime") is not None


def test_abort_button_leaves_vm_on_source(page):
    panel = page.locator(".labmig-panel").first
    panel.scroll_into_view_if_needed()
    expected_run = _runs_so_far(panel) + 1
    backend = panel.locator("select").first.input_value()
    # Dirtying about as fast as the link (simulator) or faster than the capped stream (lab):
    # Abort comes in time.
    slow = {"dirty rate": "110MiB/s", "link rate": "1Gbit/s"} if backend == "simulator" else \
        {"dirty rate": "24MiB/s", "max bandwidth": "4MiB/s"}
    before = {label: _form_value(panel, label) for label in slow}
    for label, value in slow.items():
        _set_form_value(panel, label, value)
    try:
        panel.get_by_role("button", name="live", exact=True).click()
        panel.get_by_role("button", name="Migrate").click()
        panel.locator(".widget-html", has_text="pre-copy pass").first.wait_for(timeout=300_000)
        panel.get_by_role("button", name="Abort").click()
        table = panel.locator(f'.labmig-run[data-run="{expected_run}"] .labmig-result')
        table.wait_for(timeout=300_000)
        panel.screenshot(path=str(SHOTS / "panel-aborted.png"))
        assert table.get_attribute("data-outcome") == "aborted", table.inner_text()
        assert "runs on " + _form_value(panel, "source") in table.inner_text()
    finally:
        for label, value in before.items():
            _set_form_value(panel, label, value)


def _check_against_simulator(panel, params, downtime, total, wire, table) -> None:
    from labmig.widgets.backends import get_backend
    from labmig.widgets.controller import MigrationParams

    strategy = panel.locator("select").nth(1).input_value()
    oracle = get_backend("simulator").predict(MigrationParams(
        backend="simulator", kind="live", strategy=strategy, vm=params["vm"], source=params["source"],
        destination=params["destination"], memory=params["memory"], working_set=params["working set"],
        dirty_rate=params["dirty rate"], link_rate=params["link rate"], max_bandwidth=params["max bandwidth"],
        downtime_limit=params["max downtime"], disk=params["disk"]))
    assert downtime == pytest.approx(oracle.downtime, rel=1e-9)
    assert total == pytest.approx(oracle.total_time, rel=1e-9)
    assert wire == oracle.bytes_total
    assert int(_shown(table, "iterations")) == oracle.iterations
