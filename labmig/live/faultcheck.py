"""How a fault trial on the local lab ended, as the hosts and the guest say afterwards.

    HostState       one host's view of the VM: libvirt's state and reason ("paused: postcopy failed")
    EndState        every host's view, where the VM runs, where it is paused, and ``words()``
    observe()       asks libvirt on each lab host; a host that cannot be asked says so
    settle()        observes until the VM runs on exactly one host and is paused nowhere
                    (or a deadline passes): the end state and how long it took
    disk_sha256()   sha256 of the VM's disk as one host holds it (None: no such file there)
    GuestHealth     the guest's memory checker: errors from every host's console and from
                    its own ``STAT``, and whether it kept checking (rounds advanced)
    guest_health()  reads it, waiting for one check round to complete after the move
    Trial           one trial of any kind: problems found (none: passed), seconds from the
                    fault to the verified end state, ``detected_after``, words, details

A trial passes only on what both hosts and the guest report after it, never on what the
migration believed. Used by :mod:`labmig.live.faultcases`, :mod:`labmig.live.faultprocs`
and ``bench/bench_live_faults.py``.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import LabmigError


@dataclass(frozen=True)
class HostState:
    host: str
    state: str = "absent"          # running, paused, shut off, absent, unreachable, or libvirt's word
    reason: str = ""               # libvirt's reason for the state, from its constant's name
    persistent: bool = False

    def words(self) -> str:
        if self.state in ("absent", "unreachable"):
            return f"{self.host}: {self.state}{f' ({self.reason})' if self.reason else ''}"
        kept = "defined" if self.persistent else "transient"
        return f"{self.host}: {self.state}{f' ({self.reason})' if self.reason else ''}, {kept}"


@dataclass(frozen=True)
class EndState:
    vm: str
    hosts: tuple[HostState, ...] = ()

    @property
    def runs_on(self) -> list[str]:
        return [h.host for h in self.hosts if h.state == "running"]

    @property
    def paused_on(self) -> list[str]:
        return [h.host for h in self.hosts if h.state == "paused"]

    @property
    def single(self) -> str | None:
        """The one host the VM runs on, when it runs on exactly one and is paused nowhere."""
        if len(self.runs_on) == 1 and not self.paused_on and all(h.state != "unreachable" for h in self.hosts):
            return self.runs_on[0]
        return None

    def on(self, host: str) -> HostState:
        return next((h for h in self.hosts if h.host == host), HostState(host))

    def words(self) -> str:
        return "; ".join(h.words() for h in self.hosts)


def _state_words(libvirt: Any, state: int, reason: int) -> tuple[str, str]:
    names = {libvirt.VIR_DOMAIN_RUNNING: ("running", "VIR_DOMAIN_RUNNING_"),
             libvirt.VIR_DOMAIN_PAUSED: ("paused", "VIR_DOMAIN_PAUSED_"),
             libvirt.VIR_DOMAIN_SHUTOFF: ("shut off", "VIR_DOMAIN_SHUTOFF_"),
             libvirt.VIR_DOMAIN_SHUTDOWN: ("shutting down", "VIR_DOMAIN_SHUTDOWN_"),
             libvirt.VIR_DOMAIN_CRASHED: ("crashed", "VIR_DOMAIN_CRASHED_")}
    word, prefix = names.get(state, (f"state {state}", ""))
    if not prefix:
        return word, f"reason {reason}"
    for attr in dir(libvirt):
        if attr.startswith(prefix) and not attr.endswith("_LAST") and getattr(libvirt, attr) == reason:
            return word, attr[len(prefix):].lower().replace("_", " ")
    return word, f"reason {reason}"


def host_state(lab: Any, host: str, vm: str) -> HostState:
    """What ``host`` of ``lab`` says of ``vm``; never raises."""
    import libvirt

    try:
        conn = lab.host(host).connect()
    except Exception as exc:
        return HostState(host, "unreachable", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    try:
        try:
            dom = conn.lookupByName(vm)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return HostState(host)
            return HostState(host, "unreachable", exc.get_error_message())
        state, reason = dom.state()[:2]
        word, why = _state_words(libvirt, state, reason)
        return HostState(host, word, why, bool(dom.isPersistent()))
    except libvirt.libvirtError as exc:
        return HostState(host, "unreachable", exc.get_error_message())
    finally:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass


def observe(lab: Any, vm: str, hosts: tuple[str, ...] = ("lab1", "lab2")) -> EndState:
    return EndState(vm, tuple(host_state(lab, h, vm) for h in hosts))


def settle(lab: Any, vm: str, timeout: float, interval: float = 0.5) -> tuple[EndState, float]:
    """Observe until the VM runs on exactly one host and is paused nowhere; (last view, seconds waited)."""
    t0 = time.monotonic()
    while True:
        end = observe(lab, vm)
        if end.single or time.monotonic() - t0 >= timeout:
            return end, time.monotonic() - t0
        time.sleep(interval)


def disk_sha256(guest: Any, host: str) -> str | None:
    try:
        with open(guest.disk_outside(host), "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return None


@dataclass
class GuestHealth:
    console_errors: int = 0         # the guest's counter in its last heartbeat, over every host's console
    stat_errors: int | None = None  # the counter it answers now over UDP (None: no answer)
    rounds_before: int | None = None
    rounds_after: int | None = None

    @property
    def errors(self) -> int:
        return max(self.console_errors, self.stat_errors or 0)

    @property
    def checking(self) -> bool:
        """It answered, and completed a check round since the first reading."""
        return self.rounds_after is not None and self.rounds_before is not None and \
            self.rounds_after > self.rounds_before


def _stat(guest: Any) -> dict[str, Any] | None:
    try:
        return dict(guest.stat())
    except (LabmigError, OSError):
        return None


def guest_health(guest: Any, wait: float = 15.0) -> GuestHealth:
    """The guest's memory errors, after it completed one more check round (up to ``wait`` s)."""
    health = GuestHealth()
    first = _stat(guest)
    deadline = time.monotonic() + wait
    last = first
    if first is not None:
        health.rounds_before = int(first.get("rounds", 0))
        while time.monotonic() < deadline:
            time.sleep(0.5)
            last = _stat(guest) or last
            if last is not None and int(last.get("rounds", 0)) > health.rounds_before:
                break
    if last is not None:
        health.rounds_after = int(last.get("rounds", 0))
        health.stat_errors = int(last.get("errors", 0))
    health.console_errors = max(guest.console(h).reported_errors for h in ("lab1", "lab2"))
    return health


@dataclass
class Trial:
    """One trial of a campaign; it passed when it was carried out and no problem was found."""

    case: str
    trial: int = 0
    carried_out: bool = False
    problems: list[str] = field(default_factory=list)
    to_end_state: float | None = None      # seconds from the fault to the verified end state
    detected_after: float | None = None
    message: str = ""
    end: str = ""                           # both hosts' states, in words, when the trial ended
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.carried_out and not self.problems

    def check(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def check_end(trial: Trial, lab: Any, guest: Any, expect_on: str | None, disk_sha: str | None,
              settle_timeout: float = 60.0, since: float | None = None) -> EndState:
    """The checks every trial ends with; ``expect_on`` None accepts either host.

    The VM runs on exactly one host (the expected one) and is paused nowhere; the other host
    holds no definition of it and, for a local disk, no copy; its disk has the content it had
    before (``disk_sha``); the guest's memory checker ran after the move and counts no error.
    """
    end, _ = settle(lab, guest.name, settle_timeout)
    if since is not None:
        trial.to_end_state = time.monotonic() - since
    trial.end = end.words()
    here = end.single
    where = f"expected on {expect_on} only" if expect_on else "expected on one host"
    if not trial.check(here is not None and (expect_on is None or here == expect_on),
                       f"the VM does not run on exactly one host, paused nowhere ({where}): {end.words()}"):
        return end
    assert here is not None
    other = "lab2" if here == "lab1" else "lab1"
    trial.check(end.on(other).state == "absent", f"{other} still holds the VM: {end.on(other).words()}")
    if guest.spec.disk == "local":
        trial.check(not guest.disk_outside(other).exists(), f"{other} still holds a copy of the local disk")
    if disk_sha is not None:
        now = disk_sha256(guest, here)
        trial.details["disk_sha256"] = now
        trial.check(now == disk_sha, f"the disk on {here} changed: sha256 {now} (before: {disk_sha})")
    health = guest_health(guest)
    trial.details["memory"] = asdict(health)
    trial.check(health.stat_errors is not None, "the guest did not answer STAT after the trial")
    trial.check(health.checking, "the guest's memory checker completed no round after the trial")
    trial.check(health.errors == 0, f"the guest's memory checker reports {health.errors} error(s)")
    return end
