"""Cold-migration experiments on the local lab: guests with real data, crash trials, ping-pong.

    make_guest(lab, name, index)   a lab guest whose local disk holds random data (so a
                                   full copy really costs its size), booted and ready
    disk_digest(path, skip=0)      SHA-256 of a disk image (optionally past its first bytes)
    crash_trial(lab, guest, step)  run `labmig migrate cold` in a child killed (SIGKILL) right
                                   after ``step``, then `labmig recover`; check the VM runs on
                                   exactly one host and the source disk is intact
    TrialResult                    what one trial saw, in words and numbers, and its case
                                   ("step-kill" here; labmig.cold.faultcases names the others)

Used by the lab tests (a few trials per step) and by ``bench.bench_cold_crash``
(more, beside the campaign's other cases: labmig.cold.faultcases, on the harness
of labmig.cold.campaign). The source disk check: when the VM ends on the destination
(awaiting confirm) the source image must be bit-identical; when it was rolled back, the
guest boots from it again, which bumps its boot counter (first sector) — every
other byte must be identical and the counter exactly one higher.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .migration import CRASH_ENV

MiB = 1 << 20
SECTOR = 512


def disk_digest(path: str | os.PathLike[str], skip: int = 0) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(skip)
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def make_guest(lab: Any, name: str, index: int, host: str = "lab1", random_bytes: int = 8 * MiB,
               disk_size: int = 16 * MiB, disk: str = "local") -> Any:
    """A booted lab guest whose disk (``local`` or ``shared``) holds random data after 1 MiB."""
    from ..lab.guest import GuestSpec

    try:
        lab.remove_guest(name)
    except Exception:  # not there: nothing to remove
        pass
    spec = GuestSpec(name=name, index=index, disk=disk, memory=128 * MiB, wss=8 * MiB, disk_size=disk_size)
    guest = lab.create_guest(spec, host=host, start=False)
    path = guest.disk_outside(host)
    with open(path, "r+b") as f:
        f.seek(1 * MiB)
        f.write(os.urandom(random_bytes))
    conn = lab.host(host).connect()
    try:
        conn.lookupByName(name).create()
    finally:
        conn.close()
    wait_boot(guest, 1)
    return guest


def wait_boot(guest: Any, count: int, timeout: float = 90.0) -> None:
    """Wait until the guest answers on the network with boot counter ``count``."""
    from ..errors import LabError

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            stat = guest.stat()
            if stat.get("boot") == count:
                return
            last = str(stat)
        except LabError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise LabError(f"guest {guest.name} did not come up with boot counter {count} ({last})")


@dataclass
class TrialResult:
    step: str
    ok: bool
    ended_on: str | None = None
    killed: bool = False
    seconds: float = 0.0
    detail: str = ""
    checks: dict[str, Any] = field(default_factory=dict)
    case: str = "step-kill"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labmig(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labmig", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def crash_trial(lab: Any, guest: Any, step: str, journal_dir: str, source: str = "lab1",
                destination: str = "lab2") -> TrialResult:
    """One kill-and-recover trial; leaves the guest running on ``source`` again."""
    t0 = time.monotonic()
    res = TrialResult(step=step, ok=False)
    src_disk = guest.disk_outside(source)
    boots = guest.boot_counter(source)
    full_before = disk_digest(src_disk)
    tail_before = disk_digest(src_disk, skip=SECTOR)
    env = dict(os.environ, LABMIG_LAB=lab.name, LABMIG_JOURNAL_DIR=str(journal_dir), **{CRASH_ENV: step})
    mig = _labmig(["migrate", "cold", guest.name, "--to", destination, "--from", source,
                   "--shutdown-timeout", "1s", "--json"], env)
    res.killed = mig.returncode == -9
    env.pop(CRASH_ENV)
    rec = _labmig(["recover", "--json"], env)
    if rec.returncode != 0:
        res.detail = f"recover failed: {rec.stderr.strip()[-400:]}"
        return res
    done = json.loads(rec.stdout or "[]")
    actions = [a for d in done for a in d.get("actions", [])]
    res.checks["recover"] = done
    where = guest.where()
    running = [h for h, s in where.items() if s == "running"]
    res.checks["where"] = where
    if len(where) != 1 or len(running) != 1:
        res.detail = f"after recover the VM is at {where}, not running on exactly one host"
        return res
    res.ended_on = running[0]
    if res.ended_on == source:
        restarted = "start-source" in actions
        wait_boot(guest, boots + (1 if restarted else 0))
        res.checks["boots"] = (boots, guest.boot_counter(source))
        if restarted:  # booted again from its disk: only the boot counter may differ
            ok_disk = disk_digest(src_disk, skip=SECTOR) == tail_before
            ok_count = guest.boot_counter(source) == boots + 1
        else:          # never stopped: nothing may differ
            ok_disk = disk_digest(src_disk) == full_before
            ok_count = guest.boot_counter(source) == boots
        res.ok = ok_disk and ok_count and res.killed
        how = "restarted from its disk (boot counter +1, every other byte identical)" if restarted else \
            "it had not been stopped (disk bit-identical)"
        res.detail = f"rolled back to {source}: {how}" if res.ok else \
            f"rolled back, but disk ok={ok_disk}, boots {boots}->{guest.boot_counter(source)}, killed={res.killed}"
    else:
        identical = disk_digest(src_disk) == full_before
        res.checks["source_identical"] = identical
        wait_boot(guest, boots + 1)
        back = _labmig(["revert", guest.name, "--json"], env)
        res.ok = identical and res.killed and back.returncode == 0
        res.detail = ("awaiting confirm on the destination, source disk bit-identical; reverted"
                      if res.ok else f"on destination: source identical={identical}, revert rc={back.returncode} "
                      f"{back.stderr.strip()[-300:]}")
        if back.returncode == 0:
            wait_boot(guest, boots + 1)
    res.seconds = time.monotonic() - t0
    return res
