"""``python -m bench``: names to choose from, and a clear refusal of a name that is not there."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_help_lists_every_benchmark_and_runs_none():
    r = run_bench("--help")
    assert r.returncode == 0
    for name in sorted(p.stem[6:] for p in (ROOT / "bench").glob("bench_*.py")):
        assert name in r.stdout
    assert "==" not in r.stdout  # nothing was run


def test_unknown_benchmark_is_refused_by_name():
    r = run_bench("copy", "nope")
    assert r.returncode == 2
    assert "no benchmark 'nope'" in r.stderr and "bitmap" in r.stderr
