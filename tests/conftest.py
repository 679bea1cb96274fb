"""Shared pytest set-up: which core the run uses, and the test lab.

The test lab
    Every test, and every process a test starts (the labmig command, notebook kernels,
    JupyterLab and its kernels), uses the lab named by $LABMIG_LAB, default "labmigtest":
    the variable is set for the whole session before any test runs. "labmig", the lab that
    `make demo` leaves up under labmig's default name, is refused as a test lab.

    lab         (session) the test lab, up (brought up when it is not); needs root
    lab_guard   (autouse) around every test marked ``lab`` or ``browser``, and every test marked
                ``uses_lab`` while the test lab is up. Guarantees each such test starts with the
                lab in a known state and leaves it so, whatever its outcome: its guests defined
                and running on exactly one host, the guests it made removed, no migration job
                left (aborted), no process it started left running (ended with its process
                group), the link up and unshaped, faults undone (filled disks emptied, dead
                daemons started again). A test that fails gets the lab's state at that moment
                in its report; one that passes but left the lab changed gets a warning.
    lab_module_sweep  (autouse, module) the same modules end with the domains they started with
    other_labs_untouched  (autouse, session) the run leaves every other lab as it found it:
                a change to the default lab "labmig" fails the run; a change to another lab
                is a warning (another session may be using it: list such labs, comma-separated,
                in $LABMIG_TEST_SHARED_LABS to leave them out)

Helpers for tests (waits that report the lab's state when they time out) are in labstate.py.
"""
from __future__ import annotations

import os
import warnings

import pytest

import labstate
from labstate import DEFAULT_LAB, TEST_LAB

GUARDED_MARKERS = ("lab", "browser", "uses_lab")
REPORTS = pytest.StashKey[dict]()          # item -> {"setup"|"call"|"teardown": TestReport}
GUARDED_LAB = pytest.StashKey[object]()    # item -> the LocalLab its guard watches
RESTORES = pytest.StashKey[list]()         # config -> [(nodeid, words)] for the summary
BASELINE_RATE = pytest.StashKey[dict]()    # config -> {"rate": link rate when first seen}
SIDE_LABS = {labstate.side_lab("dc"), labstate.side_lab("hs")}


class LabLeftChanged(UserWarning):
    """A test that passed had left the lab changed; the guard put it back."""


class OtherLabChanged(UserWarning):
    """A lab other than the test lab changed during the run."""


def pytest_report_header(config):
    from labmig import core

    forced = " (LABMIG_PUREPYTHON=1)" if os.environ.get("LABMIG_PUREPYTHON") else ""
    return [f"labmig core: {core.IMPLEMENTATION}{forced}", f"test lab: {TEST_LAB} (LABMIG_LAB)"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "uses_lab: may use the test lab when it is up (notebooks, panels); guarded like the lab tests")
    if TEST_LAB == DEFAULT_LAB:
        raise pytest.UsageError(
            f"LABMIG_LAB={DEFAULT_LAB} names labmig's default lab (the one `make demo` leaves up); "
            "the tests use their own: unset LABMIG_LAB (they then use 'labmigtest') or name another lab")
    os.environ["LABMIG_LAB"] = TEST_LAB    # for this process and every process the tests start
    config.stash[RESTORES] = []
    config.stash[BASELINE_RATE] = {}


# --- the lab ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lab():
    """The test lab ($LABMIG_LAB, default labmigtest), up: `make test` brings it up before the
    run; run alone, this brings it up itself (idempotent). Needs root."""
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (namespaces, libvirtd); run `make test` as root")
    from labmig.lab import LocalLab

    lab = LocalLab(TEST_LAB)
    if not lab.is_up():
        lab.up()
    return lab


def _lab_if_up():
    """The test lab when it is up and usable (root), else None: for tests that only may use it."""
    if os.geteuid() != 0:
        return None
    from labmig.lab import LocalLab

    lab = LocalLab(TEST_LAB)
    return lab if lab.is_up() else None


def _guarded(item) -> bool:
    return any(item.get_closest_marker(m) for m in GUARDED_MARKERS)


def _baseline_rate(config, lab) -> int | None:
    """The link's shaping when this session first saw the lab: what the guard restores."""
    seen = config.stash[BASELINE_RATE]
    if "rate" not in seen:
        seen["rate"] = lab.link_rate
    return seen["rate"]


def _not_as_before(before: labstate.Snapshot, after: labstate.Snapshot) -> list[str]:
    """Differences from ``before`` that restore() should have removed."""
    found = [f"{name} is new since the test started" for name in sorted(after.names - before.names)]
    found += [f"{name} is gone" for name in sorted(before.names - after.names)]
    for name in sorted(before.names & after.names):
        was = [d.host for d in before.named(name) if d.active]
        now = [d.host for d in after.named(name) if d.active]
        if was and len(now) != 1:
            found.append(f"{name} runs on {len(now)} hosts")
        if not was and now:
            found.append(f"{name} runs, but was off")
    return found


@pytest.fixture(autouse=True)
def lab_guard(request):
    """Around each test marked lab or browser (or uses_lab while the test lab is up), guarantees:

    * before it: the lab is in a known state (every daemon answers, link up, no job, no guest
      active on two hosts, no filled disk); one left otherwise is repaired, or the test fails
      at once saying why, instead of timing out on it;
    * after it, passed or failed: processes it started are ended (with their process groups),
      then ``labstate.restore()`` puts the lab back as it was before the test (its guests
      running on exactly one host, the ones it made removed, jobs aborted, link and disks as
      before, daemons running); what could not be restored fails the test's teardown.
    """
    item = request.node
    lab = None
    if _guarded(item):
        lab = request.getfixturevalue("lab") if item.get_closest_marker("lab") else _lab_if_up()
    if lab is None:
        yield
        return
    item.stash[GUARDED_LAB] = lab
    config = request.config
    rate = _baseline_rate(config, lab)
    before = labstate.snapshot(lab)
    if before.problems():
        # An earlier test left what its own guard could not put back, or someone else did.
        done = labstate.restore(lab, before, rate, remove_new=False)
        config.stash[RESTORES].append((item.nodeid, "before the test: " + "; ".join(done)))
        before = labstate.snapshot(lab)
        if before.problems():
            pytest.fail("the lab is not in a known state and could not be restored: "
                        f"{'; '.join(before.problems())}\n{before.describe()}", pytrace=False)
    children = labstate.ChildProcesses()
    yield
    failed = any(report.failed for report in item.stash.get(REPORTS, {}).values())
    done = children.end_new()
    done += labstate.restore(lab, before, rate)
    after = labstate.snapshot(lab)
    left = after.problems() + _not_as_before(before, after)
    if done:
        config.stash[RESTORES].append((item.nodeid, "; ".join(done)))
    if left:
        pytest.fail(f"the lab could not be restored after this test: {'; '.join(left)}\n{after.describe()}",
                    pytrace=False)
    repaired = [words for words in done if not words.endswith("which the test left behind")]
    if repaired and not failed:
        warnings.warn(LabLeftChanged(f"the test passed but left the lab changed; restored: {'; '.join(repaired)}"))


@pytest.fixture(scope="module", autouse=True)
def lab_module_sweep(request):
    """A module that uses the lab ends with the domains it started with (its module-scoped
    guests, made after the guard's first snapshot, are removed even if their fixture was not)."""
    items = [i for i in request.session.items if i.getparent(pytest.Module) is request.node]
    lab = None
    if any(i.get_closest_marker("lab") for i in items):
        lab = request.getfixturevalue("lab")
    elif any(_guarded(i) for i in items):
        lab = _lab_if_up()
    if lab is None:
        yield
        return
    before = labstate.snapshot(lab).names
    yield
    left = sorted(labstate.snapshot(lab).names - before)
    for name in left:
        labstate.remove_guest(lab, name)
    if left:
        request.config.stash[RESTORES].append((request.node.nodeid, f"removed {', '.join(left)} at the module's end"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    lab = item.stash.get(GUARDED_LAB, None)
    if report.failed and lab is not None and report.when in ("setup", "call"):
        report.sections.append(("lab state at the failure", labstate.describe(lab)))
    return report


def pytest_terminal_summary(terminalreporter, config):
    restores = config.stash.get(RESTORES, [])
    if restores:
        terminalreporter.section(f"lab {TEST_LAB} restored by the lab guard")
        for nodeid, words in restores:
            terminalreporter.line(f"{nodeid}: {words}")


# --- every other lab -------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def other_labs_untouched():
    """The run changes no lab but the test lab and the side labs its tests make and remove.

    Read from files only (directories, namespaces, libvirt sockets, defined and running domains
    with their ids), so other labs' daemons are not even asked."""
    shared = {name.strip() for name in os.environ.get("LABMIG_TEST_SHARED_LABS", "").split(",") if name.strip()}
    exclude = {TEST_LAB} | SIDE_LABS | shared
    try:
        before = labstate.footprints(exclude)
    except OSError:       # not readable here (not root): nothing to compare
        yield
        return
    yield
    failure, others = labstate.other_labs_verdict(labstate.footprint_changes(before, labstate.footprints(exclude)))
    for words in others:
        warnings.warn(OtherLabChanged(words))
    if failure:
        pytest.fail(failure, pytrace=False)
