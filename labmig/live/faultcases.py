"""The live-migration fault matrix on the local lab: break a run mid-copy, check the rollback.

    FaultCase      name, what it breaks, how to inject it and how to heal it afterwards
    FAULT_CASES    registry: kill-dst-libvirtd, kill-dst-qemu, cut-link, abort
    CaseOutcome    what one run showed: outcome, where the VM runs, destination clean,
                   retry succeeded, the guest's memory errors, seconds, words
    run_case()     one case on a lab guest: migrate slowly, inject once pass 1 has sent
                   ``inject_after`` bytes, heal when the migration aborts or rolls back,
                   check both hosts, retry without the fault

Used by the lab tests and by ``bench/bench_live_faults.py``; needs a LocalLab up.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..model import Event, MigrationResult, TimelinePoint
from .migration import LiveMigration
from .plan import LiveOptions, LivePlan
from .probe import LabClientProbe

log = logging.getLogger(__name__)
MiB = 2**20


@dataclass(frozen=True)
class FaultCase:
    name: str
    summary: str
    inject: Callable[[Any, Any, str, str, LiveMigration], None]   # (lab, guest, src, dst, mig)
    heal: Callable[[Any, str, str], None] | None = None            # (lab, src, dst)
    heal_on: tuple[str, ...] = ("abort", "rollback")              # events that trigger the heal


def _kill_libvirtd(lab: Any, guest: Any, src: str, dst: str, mig: LiveMigration) -> None:
    from ..lab import inject
    inject(lab, "kill-libvirtd", host=dst)


def _restart_libvirtd(lab: Any, src: str, dst: str) -> None:
    from ..lab import libvirtd
    host = lab.host(dst).layout
    # A killed daemon lingers as a zombie until reaped; start only once it is gone.
    deadline = time.monotonic() + 15
    while libvirtd.pid(host) and time.monotonic() < deadline:
        time.sleep(0.2)
    libvirtd.start(host)


def _kill_qemu(lab: Any, guest: Any, src: str, dst: str, mig: LiveMigration) -> None:
    from ..lab import inject
    inject(lab, "kill-qemu", host=dst, domain=guest.name)


def _cut_link(lab: Any, guest: Any, src: str, dst: str, mig: LiveMigration) -> None:
    from ..lab import inject
    inject(lab, "link-cut")


def _restore_link(lab: Any, src: str, dst: str) -> None:
    from ..lab import inject
    inject(lab, "link-restore")


def _abort_cli(lab: Any, guest: Any, src: str, dst: str, mig: LiveMigration) -> None:
    # Through the command line, as a user in another terminal would.
    proc = subprocess.run([sys.executable, "-m", "labmig", "abort", guest.name], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "LABMIG_LAB": lab.name})
    if proc.returncode != 0:
        raise RuntimeError(f"labmig abort failed: {proc.stderr.strip()}")


FAULT_CASES: dict[str, FaultCase] = {c.name: c for c in (
    FaultCase("kill-dst-libvirtd", "SIGKILL the destination's libvirtd mid-copy (restarted after)",
              _kill_libvirtd, _restart_libvirtd, ("rollback",)),
    FaultCase("kill-dst-qemu", "SIGKILL the destination's incoming QEMU mid-copy", _kill_qemu),
    FaultCase("cut-link", "take the inter-host link down mid-copy (restored once the run aborts)",
              _cut_link, _restore_link, ("abort", "rollback")),
    FaultCase("abort", "`labmig abort VM` from another process mid-copy", _abort_cli),
)}


@dataclass
class CaseOutcome:
    case: str
    outcome: str = ""
    injected: bool = False
    on_source: bool = False
    destination_clean: bool = False
    retry_ok: bool = False
    memory_errors: int = 0
    seconds: float = 0.0
    retry_seconds: float = 0.0
    message: str = ""
    events: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (self.injected and self.outcome != "completed" and self.on_source and self.destination_clean
                and self.retry_ok and self.memory_errors == 0)


def _where(guest: Any) -> dict[str, str]:
    return guest.where()


def _dest_clean(lab: Any, guest: Any, dst: str) -> bool:
    if dst in _where(guest):
        return False
    if guest.spec.disk == "local":
        return not guest.disk_outside(dst).exists()
    return True


def run_case(lab: Any, guest: Any, case: FaultCase | str, max_bandwidth: float = 10 * MiB,
             inject_after: int = 16 * MiB, stall_timeout: float = 5.0,
             rollback_wait: float = 45.0) -> CaseOutcome:
    """Run one fault case on ``guest``, from the host it runs on to the other, then retry."""
    case = FAULT_CASES[case] if isinstance(case, str) else case
    src = guest.running_on()
    if src is None:
        raise RuntimeError(f"{guest.name} runs on no single host: {_where(guest)}")
    dst = "lab2" if src == "lab1" else "lab1"
    out = CaseOutcome(case.name)
    injected = threading.Event()
    healed = threading.Event()
    mig_ref: list[LiveMigration] = []

    def inject_now() -> None:
        try:
            case.inject(lab, guest, src, dst, mig_ref[0])
            out.injected = True
        except Exception as exc:  # recorded: the case then fails
            out.message = f"injection failed: {exc}"
            log.warning("injection of %s failed: %s", case.name, exc)

    def heal_now() -> None:
        if case.heal is not None:
            try:
                case.heal(lab, src, dst)
            except Exception as exc:
                log.warning("healing after %s failed: %s", case.name, exc)
        healed.set()

    def on_point(point: TimelinePoint) -> None:
        if not injected.is_set() and point.bytes_sent_total >= inject_after:
            injected.set()
            threading.Thread(target=inject_now, daemon=True).start()

    def on_event(event: Event) -> None:
        out.events.append(f"{event.t:.1f}s {event.kind}: {event.message}")
        if injected.is_set() and event.kind in case.heal_on and not healed.is_set():
            healed.set()
            threading.Thread(target=heal_now, daemon=True).start()

    opts = LiveOptions(max_bandwidth=max_bandwidth, policy="wait", completion_timeout=120)
    t0 = time.monotonic()
    with LiveMigration(LivePlan(guest.name, src, dst, opts), on_point=on_point, on_event=on_event,
                       stall_timeout=stall_timeout, rollback_wait=rollback_wait) as mig:
        mig_ref.append(mig)
        result = mig.run()
    out.seconds = time.monotonic() - t0
    if case.heal is not None and not healed.is_set():
        heal_now()
    if case.heal is not None:
        time.sleep(0.5)
    out.outcome = str(result.outcome)
    out.message = out.message or result.message
    where = _where(guest)
    out.on_source = where == {src: "running"}
    out.destination_clean = _dest_clean(lab, guest, dst)
    # The retry: same guest, no fault, no cap.
    t1 = time.monotonic()
    retry = migrate(guest, src, dst)
    out.retry_seconds = time.monotonic() - t1
    out.retry_ok = retry.completed and _where(guest) == {dst: "running"}
    out.memory_errors = sum(guest.console(h).reported_errors for h in ("lab1", "lab2"))
    return out


def migrate(guest: Any, src: str, dst: str, probe: bool = False, **options: Any) -> MigrationResult:
    """One plain live migration of a lab guest (options as LiveOptions takes them)."""
    plan = LivePlan(guest.name, src, dst, LiveOptions(**options))
    with LiveMigration(plan, probe=LabClientProbe(guest) if probe else None) as mig:
        return mig.run()
