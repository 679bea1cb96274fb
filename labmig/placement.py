"""Where a VM is, as observed on every host after the fact: the last line of every migration.

    HostView       one host's view of the VM: reachable or not, defined (persistent) or not,
                   its state (running, paused, shut off, absent), the paused reason
    Placement      the views of every host; ``runs_on`` (the hosts where it runs), ``words()``
                   ("lab-vm runs on lab2 (defined there only)"), ``single`` (runs on exactly one
                   host, is defined on at most that one), ``to_dict()`` for JSON
    say_where(vm, hosts, stream)   observe, then print one line (interrupted commands)
    observe(vm, hosts)   asks each host (a labmig.hosts.Host or anything with ``name`` and
                   ``domain(vm)``); a host that cannot be asked is reported as such, never
                   guessed

A migration's own account of where the VM ended up is what it believes; this module
asks libvirt on both hosts afterwards, the way ``virsh list --all`` on each would, so an
ending that disagrees with its outcome (a VM running nowhere, or on two hosts) is seen.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, TextIO

log = logging.getLogger(__name__)

RUNNING, PAUSED, SHUT_OFF, ABSENT, UNKNOWN = "running", "paused", "shut off", "absent", "unknown"


@dataclass(frozen=True)
class HostView:
    host: str
    reachable: bool = True
    state: str = ABSENT
    persistent: bool = False
    reason: str = ""            # why it is paused (post-copy, migration, I/O error …), or why unreachable

    def words(self) -> str:
        if not self.reachable:
            return f"{self.host} could not be asked ({self.reason})"
        if self.state == ABSENT:
            return f"not on {self.host}"
        kept = "defined" if self.persistent else "transient"
        why = f", {self.reason}" if self.reason and self.state == PAUSED else ""
        return f"{self.state} on {self.host} ({kept}{why})"


@dataclass(frozen=True)
class Placement:
    vm: str
    hosts: tuple[HostView, ...] = field(default_factory=tuple)

    @property
    def runs_on(self) -> list[str]:
        return [h.host for h in self.hosts if h.state == RUNNING]

    @property
    def paused_on(self) -> list[str]:
        return [h.host for h in self.hosts if h.state == PAUSED]

    @property
    def defined_on(self) -> list[str]:
        return [h.host for h in self.hosts if h.persistent]

    @property
    def unreachable(self) -> list[str]:
        return [h.host for h in self.hosts if not h.reachable]

    @property
    def single(self) -> bool:
        """Runs on exactly one host and is paused on none (every host answered)."""
        return len(self.runs_on) == 1 and not self.paused_on and not self.unreachable

    def problem(self) -> str | None:
        """What no ending may leave, or None: running on two hosts, or lost (nowhere at all).

        Defined (shut off) on a second host is no problem: a cold migration awaiting
        confirm keeps the source's definition, as ``--keep-source`` does for live.
        """
        if len(self.runs_on) + len(self.paused_on) > 1:
            return "the VM is active on more than one host"
        if not self.unreachable and not self.runs_on and not self.paused_on and not self.defined_on:
            return "the VM is neither running nor defined on any host"
        if self.unreachable:
            return "a host could not be asked"
        return None

    def words(self) -> str:
        """One sentence for the end of a run's report."""
        runs, paused, defined = self.runs_on, self.paused_on, self.defined_on
        if len(runs) == 1 and not paused:
            where = f"{self.vm} runs on {runs[0]}"
            others = [h for h in defined if h != runs[0]]
            if others:
                where += f"; it is also defined (shut off) on {', '.join(others)}"
            elif runs[0] in defined:
                where += " (defined there only)"
            else:
                where += " (transient there, defined nowhere)"
        elif len(runs) > 1:
            where = f"{self.vm} RUNS ON {len(runs)} HOSTS: {', '.join(runs)}"
        elif runs or paused:
            views = [h.words() for h in self.hosts if h.state in (RUNNING, PAUSED)]
            where = f"{self.vm} is " + "; ".join(views)
        elif defined:
            where = f"{self.vm} runs nowhere; it is defined (shut off) on {', '.join(defined)}"
        else:
            where = f"{self.vm} runs nowhere and is defined nowhere"
        if self.unreachable:
            where += "; " + "; ".join(h.words() for h in self.hosts if not h.reachable)
        return where

    def to_dict(self) -> dict[str, Any]:
        return {"vm": self.vm, "runs_on": self.runs_on, "paused_on": self.paused_on,
                "defined_on": self.defined_on, "unreachable": self.unreachable, "single": self.single,
                "problem": self.problem(),
                "words": self.words(), "hosts": [asdict(h) for h in self.hosts]}


def _pause_reason(libvirt: Any, reason: int) -> str:
    names = {"VIR_DOMAIN_PAUSED_POSTCOPY": "post-copy", "VIR_DOMAIN_PAUSED_POSTCOPY_FAILED": "post-copy failed",
             "VIR_DOMAIN_PAUSED_MIGRATION": "migrating", "VIR_DOMAIN_PAUSED_IOERROR": "I/O error",
             "VIR_DOMAIN_PAUSED_USER": "paused by a user", "VIR_DOMAIN_PAUSED_SHUTTING_DOWN": "shutting down",
             "VIR_DOMAIN_PAUSED_CRASHED": "crashed", "VIR_DOMAIN_PAUSED_STARTING_UP": "starting up"}
    for name, words in names.items():
        if getattr(libvirt, name, None) == reason:
            return words
    return f"reason {reason}"


def view_on(vm: str, host: Any) -> HostView:
    """What ``host`` says of ``vm``; never raises (an error becomes an unreachable view)."""
    try:
        import libvirt
    except ImportError:  # hosts without libvirt (test doubles): only active or not
        libvirt = None
    def ask(what: str, fn: Any) -> Any:   # under the host's watchdog when it has one: a hung daemon times out
        call = getattr(host, "call", None)
        return call(what, fn) if call is not None else fn()

    try:
        dom = host.domain(vm)
        if dom is None:
            return HostView(host.name)
        persistent = bool(ask("reading persistence", dom.isPersistent)) if hasattr(dom, "isPersistent") else True
        if libvirt is None or not hasattr(dom, "state"):
            return HostView(host.name, state=RUNNING if dom.isActive() else SHUT_OFF, persistent=persistent)
        state, reason = ask("reading the VM state", dom.state)
        if state == libvirt.VIR_DOMAIN_RUNNING:
            return HostView(host.name, state=RUNNING, persistent=persistent)
        if state == libvirt.VIR_DOMAIN_PAUSED:
            return HostView(host.name, state=PAUSED, persistent=persistent, reason=_pause_reason(libvirt, reason))
        if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTDOWN, libvirt.VIR_DOMAIN_CRASHED):
            return HostView(host.name, state=SHUT_OFF, persistent=persistent)
        return HostView(host.name, state=UNKNOWN, persistent=persistent, reason=f"libvirt state {state}")
    except Exception as exc:  # the report must come out whatever a host does
        log.debug("asking %s about %s failed", getattr(host, "name", host), vm, exc_info=True)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return HostView(getattr(host, "name", str(host)), reachable=False, state=UNKNOWN, reason=message)


def observe(vm: str, hosts: Iterable[Any]) -> Placement:
    """Ask every host where ``vm`` is, in the order given (source first reads best)."""
    return Placement(vm, tuple(view_on(vm, host) for host in hosts))


def say_where(vm: str, hosts: Iterable[Any], stream: TextIO) -> Placement:
    """Print where ``vm`` is now on ``stream`` (the last words of an interrupted command)."""
    placement = observe(vm, hosts)
    problem = placement.problem()
    print(f"labmig: where it is now: {placement.words()}" + (f" (CHECK: {problem})" if problem else ""),
          file=stream, flush=True)
    return placement
