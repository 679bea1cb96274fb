"""Start-up of the commands users run per copy: ``labmig copy`` and the disk helper.

A cold migration starts ``python -m labmig.remote.agent`` over ssh for every disk,
and ``labmig copy`` is timed as a process against rsync and cp (bench/bench_copy.py),
so whatever they import that they do not use is paid on every call. These tests run
the real modules as ``python -m`` runs them (``runpy``) and read ``sys.modules`` at
exit, which also sees modules loaded through ``importlib`` (``python -X importtime``
does not list those; ``make test`` keeps its output as a report). They fail when a
module on the deny-list is loaded; how long start-up takes is a benchmark
(``python -m bench startup``).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labmig.cli import COMMAND_MODULES, build_parser
from labmig.remote.protocol import read_frame, write_frame

# Nothing a copy uses: the lab, libvirt, the simulator and its strategies, the
# live and cold orchestration, plotting and the notebook widgets.
NEVER_FOR_A_COPY = ("labmig.lab", "libvirt", "labmig.sim", "labmig.strategies", "labmig.live",
                    "labmig.cold", "labmig.widgets", "labmig.backends", "labmig.spec",
                    "matplotlib", "ipywidgets", "IPython", "pandas")
# What can wait until a file is actually digested.
ENGINE = ("numpy", "labmig.blockcopy", "labmig.blockio", "labmig.core", "labmig._fastcopy", "xxhash")


# Runs one module as ``python -m`` does and writes the names in sys.modules at exit.
_RUN_AND_LIST = """
import atexit, json, runpy, sys
out, module = sys.argv[1], sys.argv[2]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = [module] + sys.argv[3:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _command(listing: Path, module: str, *argv: str) -> list[str]:
    return [sys.executable, "-c", _RUN_AND_LIST, str(listing), module, *argv]


def _loaded(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


def _run_cli(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    listing = tmp_path / "modules.json"
    out = subprocess.run(_command(listing, "labmig", *argv), capture_output=True, text=True, timeout=120)
    return out, set(json.loads(listing.read_text()))


def test_the_listing_sees_modules_loaded_through_importlib(tmp_path: Path) -> None:
    out, names = _run_cli(tmp_path, "copy", "--help")
    assert out.returncode == 0 and "labmig.cli" in names and "labmig.commands.copy" in names


def test_copy_help_loads_neither_the_engine_nor_anything_else(tmp_path: Path) -> None:
    out, names = _run_cli(tmp_path, "copy", "--help")
    assert out.returncode == 0 and "--block-size" in out.stdout
    assert _loaded(names, NEVER_FOR_A_COPY + ENGINE) == []
    assert _loaded(names, ("labmig.commands",)) == ["labmig.commands", "labmig.commands.copy"]


def test_bad_block_size_is_refused_before_the_engine_loads(tmp_path: Path) -> None:
    out, names = _run_cli(tmp_path, "copy", "--block-size", "3KiB", "a", "b")
    assert out.returncode == 2 and "power of two" in out.stderr
    assert _loaded(names, ENGINE) == []


def test_a_real_copy_loads_the_engine_and_nothing_else(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    src.write_bytes(os.urandom(1 << 20))
    out, names = _run_cli(tmp_path, "copy", str(src), str(dst))
    assert out.returncode == 0, out.stderr[-2000:]
    assert dst.read_bytes() == src.read_bytes()
    assert "labmig.blockcopy" in names and "numpy" in names
    assert _loaded(names, NEVER_FOR_A_COPY) == []


def test_help_of_all_commands_still_lists_every_command(tmp_path: Path) -> None:
    out, names = _run_cli(tmp_path, "--help")
    assert out.returncode == 0
    for commands in COMMAND_MODULES.values():
        for command in commands:
            assert command in out.stdout
    assert set(COMMAND_MODULES) <= names


def _agent(image_dir: Path, listing: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(_command(listing, "labmig.remote.agent", "--image-dir", str(image_dir)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _ask(proc: subprocess.Popen[bytes], header: dict, payload: bytes = b"") -> tuple[dict, bytes]:
    assert proc.stdin is not None and proc.stdout is not None
    write_frame(proc.stdin, header, payload)
    proc.stdin.flush()
    frame = read_frame(proc.stdout)
    assert frame is not None, "the helper closed its output"
    reply, data, _ = frame
    return reply, data


def _finish(proc: subprocess.Popen[bytes], listing: Path) -> set[str]:
    _ask(proc, {"op": "bye"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    return set(json.loads(listing.read_text()))


def test_helper_answers_hello_and_stat_without_the_engine(tmp_path: Path) -> None:
    listing = tmp_path / "modules.json"
    proc = _agent(tmp_path, listing)
    hello, _ = _ask(proc, {"op": "hello"})
    stat, _ = _ask(proc, {"op": "stat", "path": str(tmp_path / "disk.img")})
    names = _finish(proc, listing)
    assert hello.get("ok") and stat.get("ok") and stat["exists"] is False
    assert _loaded(names, NEVER_FOR_A_COPY + ENGINE) == []


def test_helper_loads_the_engine_on_the_first_open_only(tmp_path: Path) -> None:
    listing = tmp_path / "modules.json"
    proc = _agent(tmp_path, listing)
    disk = str(tmp_path / "disk.img")
    opened, _ = _ask(proc, {"op": "open", "path": disk, "size": 1 << 20})
    digests, payload = _ask(proc, {"op": "digests", "path": disk, "block_size": 65536, "seed": 1})
    names = _finish(proc, listing)
    assert opened.get("ok") and digests.get("ok") and digests["nblocks"] == 16 and len(payload) == 16 * 16
    assert "numpy" in names and "labmig.blockio" in names
    assert _loaded(names, NEVER_FOR_A_COPY) == []


def _registered(module: str) -> set[str]:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command")
    importlib.import_module(module).register(subparsers)
    return set(subparsers.choices)


@pytest.mark.parametrize("module", list(COMMAND_MODULES))
def test_the_command_table_names_what_each_module_registers(module: str) -> None:
    """``labmig X`` loads only the module the table names for X, so the table must be right."""
    assert _registered(module) == set(COMMAND_MODULES[module])


@pytest.mark.parametrize("argv", [["copy", "a", "b"], ["migrate", "cold", "vm", "--to", "lab2"],
                                  ["migrate", "live", "vm", "--to", "lab2"], ["status"], ["recover"],
                                  ["simulate", "--memory", "1GiB"], ["compare", "vm"], ["lab", "status"]])
def test_one_command_parses_alike_alone_and_among_all(argv: list[str]) -> None:
    alone = build_parser(argv[0]).parse_args(argv)
    among_all = build_parser().parse_args(argv)
    assert vars(alone).keys() == vars(among_all).keys()
    assert {k: v for k, v in vars(alone).items() if k != "func"} == \
           {k: v for k, v in vars(among_all).items() if k != "func"}
    assert alone.func.__qualname__ == among_all.func.__qualname__
