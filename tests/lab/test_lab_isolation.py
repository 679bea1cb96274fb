"""The tests use their own lab, never labmig's default one (which `make demo` leaves up).

tests/conftest.py sets $LABMIG_LAB for the session (default "labmigtest", "labmig" refused), so
every process a test starts looks for the test lab; these check that a process started the way
the tests start them really does, and the bookkeeping of the session-end check that no other
lab changed. (The notebook kernels and JupyterLab are checked in tests/ui.)
"""
import json
import os
import subprocess
import sys

from labstate import DEFAULT_LAB, TEST_LAB, footprint, footprint_changes, other_labs_verdict, side_lab


def test_the_session_names_the_test_lab_for_every_process_it_starts():
    assert os.environ["LABMIG_LAB"] == TEST_LAB != DEFAULT_LAB
    # `lab status` only reads (it exits 1 when the lab is not up); it names the lab it looked at.
    proc = subprocess.run([sys.executable, "-m", "labmig", "lab", "status", "--json"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert json.loads(proc.stdout)["lab"] == TEST_LAB, proc.stderr


def test_side_labs_derive_from_the_test_lab_and_are_valid_names():
    from labmig.lab import lab_name

    for suffix in ("dc", "hs"):
        name = side_lab(suffix)
        assert lab_name(name) == name and name.endswith(suffix) and name[:4] == TEST_LAB[:4]
        assert name not in (TEST_LAB, DEFAULT_LAB)


def test_footprint_of_an_absent_lab_is_empty_and_changes_are_said_in_words():
    absent = footprint("nolabhere")
    assert absent["namespaces"] == [] and not absent["run dir"] and not absent["state dir"]
    assert absent["lab1"] == {"libvirt socket": False, "defined": [], "running": {}}
    moved = {**absent, "lab2": {"libvirt socket": True, "defined": ["labvm"], "running": {"labvm": "7"}}}
    assert footprint_changes({"a": absent}, {"a": absent}) == {}
    changes = footprint_changes({"a": absent, "b": absent}, {"a": moved, "c": absent})
    assert changes["b"] == "disappeared during the run" and changes["c"] == "appeared during the run"
    assert changes["a"].startswith("lab2: ") and "'labvm': '7'" in changes["a"]


def test_a_changed_default_lab_fails_the_run_and_another_lab_warns():
    changes = {DEFAULT_LAB: "lab2: running {} -> {'labvm': '3'}", "otherlab": "appeared during the run"}
    failure, others = other_labs_verdict(changes)
    assert failure.startswith(f"the default lab {DEFAULT_LAB!r} changed during the run: lab2: running")
    assert TEST_LAB in failure
    assert len(others) == 1 and others[0].startswith("lab 'otherlab' changed") and "LABMIG_TEST_SHARED_LABS" in others[0]
    assert other_labs_verdict({}) == (None, [])
