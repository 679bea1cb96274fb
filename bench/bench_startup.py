"""Start-up of the processes a copy starts: `labmig copy --help` and the disk helper, against a bare Python.

Each is timed as a process, from its start to its exit, ``--repeat`` times
(default 20), interleaved; the median and the best are printed, and each
against the interpreter's own start (``python -c pass``), the floor any Python
command pays:

    python -c pass              the floor
    labmig copy --help          parse the command line and answer
    disk helper: hello          ``python -m labmig.remote.agent`` started, until its answer
                                to hello is read (what a cold migration starts for its
                                disks, ssh aside; its exit is not on this bill)
    labmig copy, 64 MiB, same   a real copy with nothing to send: start-up plus the engine's
                                imports plus a short copy

``--tree DIR`` also times the labmig of another checkout, e.g. an older commit, to
compare before and after in one run. Every process runs in a scratch directory (the current one
would come first on the module path). A tree is run as ``python -S`` with the tree
and this environment's site-packages on the module path (an editable install's
finder would otherwise pick this checkout); give this checkout as a tree too for a
like-for-like pair.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labmig.remote.protocol import read_frame, write_frame


def timed(fn) -> float:
    """Seconds ``fn`` took, or what it says it took (a float it returns)."""
    started = time.perf_counter()
    said = fn()
    return said if isinstance(said, float) else time.perf_counter() - started


def helper_hello(python: list[str], env: dict[str, str], image_dir: str) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(python + ["-m", "labmig.remote.agent", "--image-dir", image_dir],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=image_dir)
    assert proc.stdin is not None and proc.stdout is not None
    write_frame(proc.stdin, {"op": "hello"})
    proc.stdin.flush()
    frame = read_frame(proc.stdout)
    assert frame is not None and frame[0].get("ok"), "the helper did not answer hello"
    answered = time.perf_counter() - started
    write_frame(proc.stdin, {"op": "bye"})
    proc.stdin.close()
    proc.wait(timeout=30)
    return answered


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="runs of each (default 20)")
    ap.add_argument("--tree", action="append", default=[], metavar="DIR",
                    help="also time the labmig of this checkout (repeatable)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="labmig-startup-"))
    try:
        src, dst = work / "src.img", work / "dst.img"
        src.write_bytes(os.urandom(64 << 20))
        shutil.copyfile(src, dst)
        trees: dict[str, str | None] = {"as installed": None}
        trees |= {f"tree {Path(t).resolve().name}": t for t in args.tree}
        jobs: dict[str, object] = {"python -c pass": lambda env: subprocess.run(
            [sys.executable, "-c", "pass"], env=env, cwd=work, check=True)}
        site_packages = [p for p in sys.path if p.endswith("site-packages")]
        for label, tree in trees.items():
            env, python = dict(os.environ), [sys.executable]
            if tree:
                env["PYTHONPATH"] = os.pathsep.join([str(Path(tree).resolve()), *site_packages])
                python = [sys.executable, "-S"]
            where = subprocess.run(python + ["-c", "import labmig; print(labmig.__file__)"], env=env,
                                   cwd=work, capture_output=True, text=True, check=True).stdout.strip()
            print(f"{label}: labmig from {where}")
            cli = python + ["-m", "labmig"]
            jobs[f"labmig copy --help ({label})"] = lambda env, e=env, c=cli: subprocess.run(
                c + ["copy", "--help"], env=e, cwd=work, check=True, stdout=subprocess.DEVNULL)
            jobs[f"disk helper: hello ({label})"] = lambda env, e=env, p=python: helper_hello(p, e, str(work))
            jobs[f"labmig copy, 64 MiB, same ({label})"] = lambda env, e=env, c=cli: subprocess.run(
                c + ["copy", str(src), str(dst)], env=e, cwd=work, check=True, stdout=subprocess.DEVNULL)
        times: dict[str, list[float]] = {name: [] for name in jobs}
        for _ in range(args.repeat):
            for name, job in jobs.items():
                times[name].append(timed(lambda j=job: j(dict(os.environ))))
        floor = statistics.median(times["python -c pass"])
        print(f"{args.repeat} runs each, as processes")
        print(f"  {'what':<46} {'median':>8} {'best':>8} {'- python':>9}")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:<46} {med * 1000:>6.0f} ms {min(ts) * 1000:>5.0f} ms {(med - floor) * 1000:>6.0f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
