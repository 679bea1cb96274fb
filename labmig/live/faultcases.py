"""The live-migration fault matrix on the local lab: break a run mid-copy, check how it ends.

    FaultCase      name, what it breaks, the LiveOptions it runs with, when to inject
                   (``due``: default once ``inject_after`` bytes were sent), how to inject and
                   heal, where the VM must end (``ends``), how soon the fault must be noticed
    FAULT_CASES    registry: kill-dst-libvirtd, kill-dst-qemu, cut-link (pre-copy),
                   cut-link-autoconverge (once the throttle is on), cut-link-postcopy (after
                   the switch; restored once labmig says the job stalled), cut-link-postcopy-long
                   (the same, restored 45 s after that, past libvirt's keepalive), abort
    CaseOutcome    what one run showed (a :class:`~labmig.live.faultcheck.Trial`): outcome,
                   where the VM ended, destination clean, retry succeeded, the guest's memory
                   errors, seconds, ``detected_after`` (injection to the first abort/rollback)
    run_case()     one case on a lab guest: migrate slowly, inject, heal, check both hosts,
                   the disk and the guest (faultcheck.check_end), retry without the fault
                   from wherever the VM ended, check again
    retry_and_check()  the retry every trial ends with: migrate back without a fault, check again
    resume_postcopy()  what an operator does after a failed post-copy: libvirt's
                   VIR_MIGRATE_POSTCOPY_RESUME, through the same peer-to-peer path
    migrate()      one plain live migration of a lab guest

A case that ends on the source expects a rollback; one that ends on ``either`` host
(post-copy: the destination runs the guest and nothing can roll it back) expects the VM
to run on exactly one host, paused nowhere, once labmig is done and the fault healed.

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

from ..errors import LabmigError
from ..model import Event, MigrationResult, TimelinePoint
from .faultcheck import Trial, check_end, disk_sha256, host_state, observe
from .migration import LiveMigration
from .plan import LiveOptions, LivePlan
from .probe import LabClientProbe

log = logging.getLogger(__name__)
MiB = 2**20
POSTCOPY_BANDWIDTH_MIB = 2


@dataclass(frozen=True)
class FaultCase:
    name: str
    summary: str
    inject: Callable[[Any, Any, str, str, LiveMigration], None]   # (lab, guest, src, dst, mig)
    heal: Callable[[Any, str, str], None] | None = None            # (lab, src, dst)
    heal_on: tuple[str, ...] = ("abort", "rollback")              # events that trigger the heal
    options: dict[str, Any] = field(default_factory=dict)          # LiveOptions fields over the matrix's
    due: Callable[[TimelinePoint], bool] | None = None             # when to inject; None: after inject_after bytes
    ends: str = "source"                                           # "source" (rolled back) or "either"
    detect_within: float | None = None                             # seconds the run may take to notice it
    heal_after: float = 0.0                                        # seconds from the trigger to the heal
    settle: float = 60.0                                           # seconds the end state may take after the run


def other(host: str) -> str:
    return "lab2" if host == "lab1" else "lab1"


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


def _postcopy_then_cut(lab: Any, guest: Any, src: str, dst: str, mig: LiveMigration) -> None:
    import libvirt

    time.sleep(1.5)
    # QEMU's post-copy phase ignores max-bandwidth (max-postcopy-bandwidth, unlimited by default) and
    # would finish this small guest in under a second; at 2 MiB/s it still runs when the link goes.
    conn = lab.host(src).connect()
    try:
        conn.lookupByName(guest.name).migrateSetMaxSpeed(POSTCOPY_BANDWIDTH_MIB,
                                                         libvirt.VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY)
    finally:
        conn.close()
    mig.start_postcopy("fault case: switch to post-copy, then cut the link")
    if not any(e.kind == "postcopy" for e in mig.events):
        raise RuntimeError("libvirt refused the switch to post-copy")
    deadline = time.monotonic() + 20
    while (state := host_state(lab, dst, guest.name)).state != "running":
        if time.monotonic() > deadline:
            raise RuntimeError(f"the destination did not run the guest 20 s after the switch: {state.words()}")
        time.sleep(0.1)
    time.sleep(1.0)
    if host_state(lab, src, guest.name).reason != "postcopy":
        raise RuntimeError(f"post-copy ended before the cut: {observe(lab, guest.name).words()}")
    _cut_link(lab, guest, src, dst, mig)


def _throttled(point: TimelinePoint) -> bool:
    return point.throttle_pct > 0


def _memory_moving(point: TimelinePoint) -> bool:
    # QEMU refuses post-copy before its RAM migration starts (a block migration mirrors the disks first).
    return point.phase == "precopy" and point.iteration >= 1 and point.pages_sent > 0


def _abort_cli(lab: Any, guest: Any, src: str, dst: str, mig: LiveMigration) -> None:
    # Through the command line, as a user in another terminal would.
    proc = subprocess.run([sys.executable, "-m", "labmig", "abort", guest.name], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "LABMIG_LAB": lab.name})
    if proc.returncode != 0:
        raise RuntimeError(f"labmig abort failed: {proc.stderr.strip()}")


FAULT_CASES: dict[str, FaultCase] = {c.name: c for c in (
    FaultCase("kill-dst-libvirtd", "SIGKILL the destination's libvirtd mid-copy (restarted after)",
              _kill_libvirtd, _restart_libvirtd, ("rollback",), detect_within=15.0),
    FaultCase("kill-dst-qemu", "SIGKILL the destination's incoming QEMU mid-copy", _kill_qemu),
    FaultCase("cut-link", "take the inter-host link down mid pre-copy (restored once the run aborts)",
              _cut_link, _restore_link, ("abort", "rollback")),
    FaultCase("cut-link-autoconverge", "with --auto-converge, take the link down once QEMU throttles the "
              "guest's CPU (restored once the run aborts)", _cut_link, _restore_link, ("abort", "rollback"),
              options={"auto_converge": True}, due=_throttled),
    FaultCase("cut-link-postcopy", "switch to post-copy, then take the link down (restored once labmig "
              "says the job stalled); nothing can roll it back: labmig waits for it to finish", _postcopy_then_cut,
              _restore_link, ("stalled", "failed"), options={"postcopy": "on-timeout"}, due=_memory_moving, ends="either",
              settle=150.0),
    FaultCase("cut-link-postcopy-long", "switch to post-copy, then take the link down; restored 45 s after "
              "labmig says the job stalled (past libvirt's keepalive, 5 x 5 s)", _postcopy_then_cut, _restore_link,
              ("stalled", "failed"), options={"postcopy": "on-timeout"}, due=_memory_moving, ends="either",
              heal_after=45.0, settle=150.0),
    FaultCase("abort", "`labmig abort VM` from another process mid-copy", _abort_cli),
)}


@dataclass
class CaseOutcome(Trial):
    outcome: str = ""
    injected: bool = False
    ended_on: str | None = None
    on_source: bool = False
    destination_clean: bool = False
    retry_ok: bool = False
    memory_errors: int = 0
    seconds: float = 0.0                   # the faulty run, from the migration call to its return
    retry_seconds: float = 0.0
    events: list[str] = field(default_factory=list)


def _dest_clean(lab: Any, guest: Any, dst: str) -> bool:
    if dst in guest.where():
        return False
    if guest.spec.disk == "local":
        return not guest.disk_outside(dst).exists()
    return True


def run_case(lab: Any, guest: Any, case: FaultCase | str, max_bandwidth: float = 10 * MiB,
             inject_after: int = 16 * MiB, stall_timeout: float = 5.0,
             rollback_wait: float = 45.0, settle_timeout: float = 60.0, trial: int = 0) -> CaseOutcome:
    """Run one fault case on ``guest``, from the host it runs on to the other, check, retry, check."""
    case = FAULT_CASES[case] if isinstance(case, str) else case
    src = guest.running_on()
    if src is None:
        raise RuntimeError(f"{guest.name} runs on no single host: {guest.where()}")
    dst = other(src)
    out = CaseOutcome(case.name, trial)
    disk_before = disk_sha256(guest, src)
    injected = threading.Event()
    heal_started = threading.Event()
    heal_done = threading.Event()
    mig_ref: list[LiveMigration] = []
    injected_at: list[float] = []

    def inject_now() -> None:
        try:
            case.inject(lab, guest, src, dst, mig_ref[0])
            injected_at.append(time.monotonic())
            out.injected = True
        except Exception as exc:  # recorded: the case then fails
            out.message = f"injection failed: {exc}"
            log.warning("injection of %s failed: %s", case.name, exc)

    injector = threading.Thread(target=inject_now, daemon=True)

    def heal_now() -> None:
        try:
            time.sleep(case.heal_after)
            if case.heal is not None:
                case.heal(lab, src, dst)
        except Exception as exc:
            out.problems.append(f"healing after {case.name} failed: {exc}")
            log.warning("healing after %s failed: %s", case.name, exc)
        finally:
            heal_done.set()

    def start_heal() -> None:
        if not heal_started.is_set():
            heal_started.set()
            threading.Thread(target=heal_now, daemon=True).start()

    def on_point(point: TimelinePoint) -> None:
        ready = case.due(point) if case.due is not None else point.bytes_sent_total >= inject_after
        if not injected.is_set() and ready:
            injected.set()
            injector.start()

    def on_event(event: Event) -> None:
        out.events.append(f"{event.t:.1f}s {event.kind}: {event.message}")
        if injected_at and out.detected_after is None and event.kind in ("abort", "rollback", "failed", "stalled"):
            out.detected_after = time.monotonic() - injected_at[0]
        if injected.is_set() and event.kind in case.heal_on:
            start_heal()

    opts = LiveOptions(**{"max_bandwidth": max_bandwidth, "policy": "wait", "completion_timeout": 120,
                          **case.options})
    t0 = time.monotonic()
    with LiveMigration(LivePlan(guest.name, src, dst, opts), on_point=on_point, on_event=on_event,
                       stall_timeout=stall_timeout, rollback_wait=rollback_wait) as mig:
        mig_ref.append(mig)
        result = mig.run()
    out.seconds = time.monotonic() - t0
    if injected.is_set():
        injector.join(60)
        start_heal()
        heal_done.wait(60 + case.heal_after)
    out.outcome = str(result.outcome)
    out.message = out.message or result.message
    out.carried_out = out.injected
    out.details["max_throttle_pct"] = result.max_throttle_pct
    out.details["phases_seen"] = sorted({p.phase for p in result.timeline})
    out.details["labmig_said"] = result.message
    if not out.injected:
        out.problems.append(out.message or "the fault was never injected (its moment never came)")
    if case.ends == "source":
        out.check(out.outcome != "completed", "the migration completed despite the fault")
    if case.detect_within is not None:
        out.check(out.detected_after is not None and out.detected_after < case.detect_within,
                  f"the fault was noticed after {_secs(out.detected_after)} (limit {case.detect_within:.0f} s)")
    end = check_end(out, lab, guest, src if case.ends == "source" else None, disk_before,
                    max(settle_timeout, case.settle), since=injected_at[0] if injected_at else t0)
    out.details["after_fault"] = out.end
    out.ended_on = end.single
    out.on_source = end.single == src
    out.destination_clean = _dest_clean(lab, guest, dst)
    out.memory_errors = _memory_errors(out)
    if out.ended_on is not None:
        t1 = time.monotonic()
        out.retry_ok = retry_and_check(out, lab, guest, disk_before, settle_timeout)
        out.retry_seconds = time.monotonic() - t1
        out.memory_errors = max(out.memory_errors, _memory_errors(out))
    return out


def retry_and_check(trial: Trial, lab: Any, guest: Any, disk_sha: str | None, settle_timeout: float = 60.0) -> bool:
    """Migrate the VM, without a fault or cap, from the one host it runs on to the other; check that end.

    Problems found after it are prefixed "after the retry"; ``trial.end`` keeps the fault's end state
    and ``details["after_retry"]`` gets the retry's."""
    here = observe(lab, guest.name).single
    if here is None:
        trial.problems.append("no retry: the VM does not run on exactly one host")
        return False
    target = other(here)
    try:
        result = migrate(guest, here, target)
    except LabmigError as exc:
        trial.problems.append(f"the retry without the fault was refused: {exc.message}")
        return False
    ok = trial.check(result.completed and guest.where() == {target: "running"},
                     f"the retry without the fault failed: {result.message}")
    before, kept = len(trial.problems), trial.end
    check_end(trial, lab, guest, target, disk_sha, settle_timeout)
    trial.problems[before:] = [f"after the retry: {p}" for p in trial.problems[before:]]
    trial.details["after_retry"], trial.end = trial.end, kept
    return ok


def _memory_errors(trial: Trial) -> int:
    memory = trial.details.get("memory", {})
    return max(int(memory.get("console_errors", 0)), int(memory.get("stat_errors") or 0))


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def resume_postcopy(lab: Any, guest: Any, src: str, dst: str, timeout: float = 120.0) -> str:
    """After a failed post-copy: ask the source's libvirt to resume it (``virsh migrate --postcopy-resume``).

    Not something labmig does: an operator's step, so a campaign can say whether the guest
    could have been recovered, and bring the lab back. Returns what happened, in words.
    """
    import libvirt

    from ..hosts import resolve_host

    before = observe(lab, guest.name)
    source, destination = resolve_host(src), resolve_host(dst)
    try:
        dom = source.domain(guest.name)
        if dom is None:
            return f"nothing to resume: {guest.name} is not on {src} ({before.words()})"
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_POSTCOPY
                 | libvirt.VIR_MIGRATE_POSTCOPY_RESUME | libvirt.VIR_MIGRATE_PERSIST_DEST
                 | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
        uri = destination.migration_uri()
        params = {libvirt.VIR_MIGRATE_PARAM_URI: uri} if uri else {}
        t0 = time.monotonic()
        try:
            source.call("resuming post-copy", dom.migrateToURI3, destination.peer_uri(), params, flags,
                        timeout=timeout)
            said = f"libvirt resumed the post-copy in {time.monotonic() - t0:.1f} s"
        except Exception as exc:
            said = f"the post-copy resume failed after {time.monotonic() - t0:.1f} s: {exc}"
    finally:
        source.close()
        destination.close()
    time.sleep(1.0)
    return f"before: {before.words()}. {said}. after: {observe(lab, guest.name).words()}"


def migrate(guest: Any, src: str, dst: str, probe: bool = False, **options: Any) -> MigrationResult:
    """One plain live migration of a lab guest (options as LiveOptions takes them)."""
    plan = LivePlan(guest.name, src, dst, LiveOptions(**options))
    with LiveMigration(plan, probe=LabClientProbe(guest) if probe else None) as mig:
        return mig.run()
