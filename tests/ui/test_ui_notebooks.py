"""Every lab notebook runs top to bottom with nbclient, and keeps its code short.

The notebooks are the lab exercises: a cell that fails here fails in front of a student. The
ones that prefer the local lab fall back to the simulator when it is not up, and say so. Their
kernels use the test lab ($LABMIG_LAB, set for the session by tests/conftest.py), never labmig's
default lab; while it is up the lab guard puts it back after each notebook.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat
import pytest

from labstate import DEFAULT_LAB, TEST_LAB
from ui_harness import NOTEBOOKS, run_notebook

NOTEBOOK_PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
MAX_CELL_LINES = 8          # more than this is helper code: it belongs in labmig
MAX_FUNCTION_LINES = 3


def test_all_seven_notebooks_are_there():
    assert [p.name[:2] for p in NOTEBOOK_PATHS] == [f"{i:02d}" for i in range(1, 8)]


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.stem)
def test_notebook_has_no_helper_code(path: Path):
    nb = nbformat.read(path, as_version=4)
    kinds = {cell.cell_type for cell in nb.cells}
    assert {"markdown", "code"} <= kinds
    assert any("**Task" in c.source for c in nb.cells if c.cell_type == "markdown"), "no task for the student"
    assert any("**Question" in c.source for c in nb.cells if c.cell_type == "markdown"), "no question"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs"), f"{path.name}: commit notebooks without outputs"
        lines = [ln for ln in cell.source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        assert len(lines) <= MAX_CELL_LINES, f"{path.name}: a cell of {len(lines)} lines:\n{cell.source}"
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                size = node.end_lineno - node.lineno + 1
                assert size <= MAX_FUNCTION_LINES, f"{path.name}: helper {node.name} belongs in labmig"


def test_a_notebook_kernel_looks_for_the_test_lab(tmp_path: Path):
    cell = ("from labmig.lab import LocalLab\nfrom labmig.widgets.backends import resolve_backend\n"
            "print(LocalLab().name)\nprint(resolve_backend()[1])")
    path = tmp_path / "which-lab.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), path)
    nb = run_notebook(path, tmp_path, timeout=120)
    name, why = "".join(o.get("text", "") for o in nb.cells[0].outputs).splitlines()[:2]
    assert name == TEST_LAB != DEFAULT_LAB
    if os.geteuid() == 0:      # otherwise the answer is "the local lab needs root", with no name
        assert f"lab '{TEST_LAB}'" in why, why


@pytest.mark.slow
@pytest.mark.uses_lab
@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path):
    nb = run_notebook(path, tmp_path, timeout=900)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", f"{path.name}: {output.get('ename')}: {output.get('evalue')}"
    # Every code cell ran (nbclient stops at the first error, so this also catches a silent stop).
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
