"""The client probe's own process lifecycle, on loopback (no lab needed)."""
import os
import subprocess
import sys
import time


def test_probe_stops_when_whoever_started_it_dies(tmp_path):
    """A pinger whose controller was killed must not run on forever."""
    out = tmp_path / "probe.json"
    starter = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-m', 'labmig.lab.probe', '--target', '127.0.0.1', '--port', '9',\n"
        f"                      '--interval', '0.01', '--out', {str(out)!r}], stdout=subprocess.PIPE,\n"
        "                     stderr=subprocess.DEVNULL)\n"
        "p.stdout.readline()\n"
        "print(p.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    r = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, timeout=30)
    pid = int(r.stdout.split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}") and \
            open(f"/proc/{pid}/stat").read().split()[2] != "Z":
        time.sleep(0.05)
    alive = os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    if alive:
        os.kill(pid, 9)
    assert not alive, "the probe kept running after its starter died"
    assert out.exists(), "the probe writes its report when it stops"
