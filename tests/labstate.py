"""The test lab as the lab tests see it: what it holds, said in words, and how to put it back.

    TEST_LAB            the lab the tests use: $LABMIG_LAB, else "labmigtest" (never labmig's
                        default "labmig", which `make demo` leaves up)
    side_lab()          names of the extra labs a test makes and removes itself, derived from
                        TEST_LAB so that two test sessions with different labs never share one
    Snapshot / snapshot()   daemons, domains (state, migration job), the inter-host link (up,
                        shaping) and filled image directories; every libvirt call time-limited
    describe()          a snapshot in words: what an assertion message says about the lab
    restore()           put the lab back: daemons, link, disks, jobs, domains (see there)
    remove_guest()      lab.remove_guest(), tried again while an ending job makes the domain vanish
    ChildProcesses      the processes this pytest process started: ends those a test left
    cmdline(), environment(), descendants()   what /proc says of a process
    wait_until(), communicate(), run_cli()   waits that, when they time out, fail with what
                        the lab looked like at that moment
    footprint(), footprints(), footprint_changes(), other_labs_verdict()
                        what a lab has on this machine, read from files only (no daemon is
                        asked), and the session check that no other lab was touched

The fixtures built on these are in tests/conftest.py.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from labmig.lab.layout import DEFAULT_LAB, RUN_ROOT, STATE_ROOT, make_layout

TEST_LAB = os.environ.get("LABMIG_LAB") or "labmigtest"
MiB = 2**20
CALL_TIMEOUT = 20.0       # seconds a libvirt daemon gets to answer one host's listing
JOB_END_TIMEOUT = 60.0    # seconds aborted migration jobs get to end
GUEST_READY_TIMEOUT = 180.0   # a restarted TCG guest on a busy machine


def side_lab(suffix: str) -> str:
    """The name of an extra lab a test makes itself (e.g. ``side_lab("dc")``: "labmigtestdc")."""
    return TEST_LAB[:12 - len(suffix)] + suffix


class LabUnresponsive(RuntimeError):
    """A daemon of the lab did not answer in time."""


def _limited(what: str, fn: Callable[..., Any], *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
    """``fn(*args)`` in a daemon thread, given up on after ``timeout`` s (a stuck daemon must not
    hang the tests, nor keep pytest from exiting)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    helper = threading.Thread(target=run, name=f"labstate: {what}", daemon=True)
    helper.start()
    helper.join(timeout)
    if helper.is_alive():
        raise LabUnresponsive(f"{what} did not answer within {timeout:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- what the lab holds ---------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A domain's running job (libvirt's statistics; on a migration's destination only its kind)."""

    operation: str            # "migration out", "migration in", or libvirt's number for others
    elapsed: float
    iteration: int
    processed: int
    total: int
    remaining: int

    def __str__(self) -> str:
        words = self.operation + (f", {self.elapsed:.0f} s" if self.elapsed else "")
        if self.total:
            words += (f", pass {self.iteration}, {self.processed / MiB:.0f} MiB sent,"
                      f" {self.remaining / MiB:.0f} MiB of {self.total / MiB:.0f} MiB left")
        return words


@dataclass(frozen=True)
class Domain:
    """One domain as one host's libvirtd has it."""

    host: str
    name: str
    state: str                # "running", "paused (migration)", "shut off" …
    active: bool
    persistent: bool
    job: Job | None
    xml: str                  # the inactive definition: what restore() defines again if it is lost

    @property
    def paused(self) -> bool:
        return self.state.startswith("paused")

    def __str__(self) -> str:
        words = f"{self.name} {self.state}" + ("" if self.persistent else " (transient)")
        return words + (f" [job: {self.job}]" if self.job else "")


@dataclass
class Snapshot:
    """What the lab held at one moment: see :func:`snapshot`."""

    lab: str
    libvirtd: dict[str, int | None] = field(default_factory=dict)
    sshd: dict[str, int | None] = field(default_factory=dict)
    domains: list[Domain] = field(default_factory=list)
    unanswered: dict[str, str] = field(default_factory=dict)    # host -> why its daemon gave no listing
    wedged: list[str] = field(default_factory=list)             # hosts whose daemon did not answer in time
    link_up: bool | None = None
    link_rate: int | None = None
    link_netem: bool = False
    filled: list[str] = field(default_factory=list)             # hosts whose image dir holds the filler

    def named(self, name: str) -> list[Domain]:
        return [d for d in self.domains if d.name == name]

    @property
    def names(self) -> set[str]:
        return {d.name for d in self.domains}

    @property
    def jobs(self) -> list[Domain]:
        return [d for d in self.domains if d.job is not None]

    def problems(self) -> list[str]:
        """What keeps the lab from being in a known state, whatever the test: [] when none."""
        found = [f"libvirtd is not running on {h}" for h, pid in self.libvirtd.items() if not pid]
        found += [f"sshd is not running on {h}" for h, pid in self.sshd.items() if not pid]
        found += [f"libvirtd on {h}: {why}" for h, why in self.unanswered.items() if self.libvirtd.get(h)]
        if self.link_up is False:
            found.append("the inter-host link is down")
        found += [f"the image directory of {h} is filled" for h in self.filled]
        found += [f"{d.name} has a job on {d.host}: {d.job}" for d in self.jobs]
        for name in sorted(self.names):
            active = [d.host for d in self.named(name) if d.active]
            if len(active) > 1:
                found.append(f"{name} is active on {' and '.join(active)}")
        return found

    def describe(self) -> str:
        daemons = ", ".join(f"{h} libvirtd {self.libvirtd[h] or 'NOT RUNNING'} sshd {self.sshd[h] or 'NOT RUNNING'}"
                            for h in sorted(self.libvirtd))
        link = "link UNKNOWN" if self.link_up is None else "link up" if self.link_up else "link DOWN"
        link += f", shaped to {self.link_rate / MiB:.1f} MiB/s" if self.link_rate else ", unshaped"
        link += " + netem delay" if self.link_netem else ""
        lines = [f"lab {self.lab}: {daemons}; {link}"]
        for host in sorted(self.libvirtd):
            doms = [str(d) for d in self.domains if d.host == host]
            if host in self.unanswered:
                doms.append(f"(no listing: {self.unanswered[host]})")
            lines.append(f"  {host}: " + ("; ".join(doms) if doms else "no domains"))
        lines += [f"  image directory of {h} FILLED" for h in self.filled]
        return "\n".join(lines)


def _state_words(libvirt: Any, state: int, reason: int) -> str:
    words = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_BLOCKED: "blocked",
             libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
             libvirt.VIR_DOMAIN_SHUTOFF: "shut off", libvirt.VIR_DOMAIN_CRASHED: "crashed"}.get(state, f"state {state}")
    if state == libvirt.VIR_DOMAIN_PAUSED:
        why = {libvirt.VIR_DOMAIN_PAUSED_USER: "by a user", libvirt.VIR_DOMAIN_PAUSED_MIGRATION: "migration",
               libvirt.VIR_DOMAIN_PAUSED_IOERROR: "i/o error", libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: "starting up",
               libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: "post-copy",
               libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: "post-copy failed"}.get(reason, f"reason {reason}")
        words += f" ({why})"
    return words


def _job(libvirt: Any, dom: Any) -> Job | None:
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError as exc:
        # libvirt refuses statistics of a migration on its destination: an incoming copy.
        if "only on the source" not in (exc.get_error_message() or ""):
            raise
        return Job("migration in", elapsed=0.0, iteration=0, processed=0, total=0, remaining=0)
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    operation = stats.get("operation")
    names = {libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT: "migration out",
             libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN: "migration in"}
    return Job(operation=names.get(operation, f"job (operation {operation})"),
               elapsed=stats.get("time_elapsed", 0) / 1000.0, iteration=stats.get("memory_iteration", 0),
               processed=stats.get("memory_processed", 0), total=stats.get("memory_total", 0),
               remaining=stats.get("memory_remaining", 0))


def _list_domains(lab: Any, host: str) -> list[Domain]:
    import libvirt

    conn = lab.host(host).connect()
    try:
        found = []
        for dom in conn.listAllDomains(0):
            try:
                state, reason = dom.state()
                active = bool(dom.isActive())
                found.append(Domain(host=host, name=dom.name(), state=_state_words(libvirt, state, reason), active=active,
                                    persistent=bool(dom.isPersistent()), job=_job(libvirt, dom) if active else None,
                                    xml=dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:   # gone meanwhile: not there
                    raise
        return found
    finally:
        conn.close()


def snapshot(lab: Any) -> Snapshot:
    """What the lab holds now. Reads only; a daemon that does not answer is noted, not waited for."""
    from labmig.lab import netns
    from labmig.lab.faults import FILLER

    snap = Snapshot(lab.name)
    for name, host in sorted(lab.hosts.items()):
        snap.libvirtd[name] = _unless_dead(host.libvirtd_pid())
        snap.sshd[name] = _unless_dead(host.sshd_pid())
        if snap.libvirtd[name]:
            try:
                snap.domains += _limited(f"libvirtd on {name}", _list_domains, lab, name)
            except LabUnresponsive as exc:
                snap.unanswered[name] = str(exc)
                snap.wedged.append(name)
            except Exception as exc:  # noted as a problem of the lab
                snap.unanswered[name] = str(exc)
        if (host.local_image_dir_outside / FILLER).exists():
            snap.filled.append(name)
    if all(Path(h.netns_path).exists() for h in lab.layout.hosts):
        snap.link_up = netns.link_is_up(lab.layout)
        snap.link_rate = netns.link_rate(lab.layout)
        snap.link_netem = any("netem" in netns.run(["tc", "-n", h.netns, "qdisc", "show", "dev", netns.LINK_DEV],
                                                   check=False).stdout for h in lab.layout.hosts)
    return snap


def _unless_dead(pid: int | None) -> int | None:
    """``pid``, or None for a process that is gone or a zombie (a daemon killed a moment ago)."""
    return pid if pid and _live(pid) else None


def describe(lab: Any) -> str:
    """The lab in words, for an assertion message; never raises."""
    try:
        return snapshot(lab).describe()
    except Exception as exc:  # the message must still be written
        return f"lab {getattr(lab, 'name', '?')}: its state could not be read ({type(exc).__name__}: {exc})"


# --- putting it back ------------------------------------------------------------------------


def restore(lab: Any, before: Snapshot, link_rate: int | None = None, remove_new: bool = True) -> list[str]:
    """Bring the lab back to a known state; returns what had to be done, in words ([] if nothing).

    * a dead (or unanswering) libvirtd or sshd is started again (`lab up`; QEMUs keep running);
    * the link is up again and shaped to ``link_rate`` (None: unshaped); filled disks are emptied;
    * migration jobs are aborted and waited for (an incoming copy that stays is destroyed);
    * every domain ``before`` ran is active on exactly one host, running, and defined nowhere
      else (the copy that runs is kept, else the one on the host it ran on; one that runs
      nowhere is started again, defined again from ``before`` if it was lost, and waited for
      until it is booted); one that was defined but off is off again;
    * domains ``before`` did not have are removed with their disks (``remove_new``).

    The caller checks the result with ``snapshot(lab).problems()``.
    """
    from labmig.lab import netns

    ready = all(netns.host_ready(h) for h in lab.layout.hosts)
    done = _undo_faults(lab, link_rate) if ready else []   # first: `lab up` would quietly bring the link up
    done += _restart_daemons(lab, snapshot(lab))
    done += _undo_faults(lab, link_rate)
    done += _end_jobs(lab)
    now = snapshot(lab)
    if remove_new:
        for name in sorted(now.names - before.names):
            remove_guest(lab, name)
            done.append(f"removed {name}, which the test left behind")
    booting: list[tuple[str, str, int]] = []
    for name in sorted(before.names):
        done += _settle(lab, name, before, now, booting)
    for name, host, ready_before in booting:
        lab.guest(name).wait_ready(host, timeout=GUEST_READY_TIMEOUT, after=ready_before)
    return done


def _restart_daemons(lab: Any, now: Snapshot) -> list[str]:
    wedged = [h for h in now.wedged if now.libvirtd.get(h)]
    for host in wedged:
        os.kill(now.libvirtd[host], signal.SIGKILL)
    dead = [f"libvirtd on {h}" for h, pid in now.libvirtd.items() if not pid]
    dead += [f"sshd on {h}" for h, pid in now.sshd.items() if not pid]
    dead += [f"libvirtd on {h} (killed: it did not answer)" for h in wedged]
    if not dead:
        return []
    deadline = time.monotonic() + 15     # a killed daemon must be gone before it is started again
    while time.monotonic() < deadline and any(lab.host(h).libvirtd_pid() for h in wedged):
        time.sleep(0.2)
    lab.up(install=False, build=False)
    return [f"started {', '.join(dead)} again"]


def _undo_faults(lab: Any, link_rate: int | None) -> list[str]:
    """The link up and shaped to ``link_rate``, no filler. Calls the faults' undo functions directly:
    ``inject()`` wants the whole lab up, and a daemon may be down."""
    from labmig.lab import faults, netns

    done = []
    if not netns.link_is_up(lab.layout):
        faults.link_restore(lab)
        done.append("brought the cut link up again")
    netem = any("netem" in netns.run(["tc", "-n", h.netns, "qdisc", "show", "dev", netns.LINK_DEV],
                                     check=False).stdout for h in lab.layout.hosts)
    if lab.link_rate != link_rate or netem:
        was = lab.link_rate
        lab.shape_link(link_rate)
        done.append(f"set the link back from {_rate_words(was)}{' with a netem delay' if netem else ''} "
                    f"to {_rate_words(link_rate)}")
    for name, host in sorted(lab.hosts.items()):
        if (host.local_image_dir_outside / faults.FILLER).exists():
            faults.unfill_disk(lab, host=name)
            done.append(f"emptied the filled image directory of {name}")
    return done


def _rate_words(rate: int | None) -> str:
    return f"{rate / MiB:.1f} MiB/s" if rate else "unshaped"


def _end_jobs(lab: Any) -> list[str]:
    import libvirt

    jobs = snapshot(lab).jobs
    if not jobs:
        return []
    done = []
    for dom in (d for d in jobs if d.job.operation != "migration in"):
        try:
            _on_domain(lab, dom.host, dom.name, lambda d: d.abortJob())
            done.append(f"aborted the job of {dom.name} on {dom.host} ({dom.job})")
        except libvirt.libvirtError as exc:
            done.append(f"could not abort the job of {dom.name} on {dom.host}: {exc.get_error_message()}")
    left = _wait_jobs_gone(lab, JOB_END_TIMEOUT)
    for dom in (d for d in left if d.job.operation == "migration in"):
        # An incoming copy whose source gave up (or a post-copy that cannot be aborted).
        _on_domain(lab, dom.host, dom.name, lambda d: d.destroy())
        done.append(f"destroyed the incoming copy of {dom.name} on {dom.host}")
    if left:
        left = _wait_jobs_gone(lab, 30)
    done += [f"the job of {d.name} on {d.host} did not end: {d.job}" for d in left]
    return done


def _wait_jobs_gone(lab: Any, timeout: float) -> list[Domain]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = snapshot(lab).jobs
        if not jobs or time.monotonic() > deadline:
            return jobs
        time.sleep(0.5)


def _on_domain(lab: Any, host: str, name: str, action: Callable[[Any], Any]) -> None:
    def run() -> None:
        conn = lab.host(host).connect()
        try:
            action(conn.lookupByName(name))
        finally:
            conn.close()
    _limited(f"{name} on {host}", run, timeout=60)


def remove_guest(lab: Any, name: str) -> None:
    """``lab.remove_guest(name)``, tried again while a job that is ending makes the domain vanish."""
    for attempt in range(3):   # a domain may vanish between lookup and undefine while a job ends
        try:
            lab.remove_guest(name)
            return
        except Exception:
            if attempt == 2:
                raise
            time.sleep(2)


def _settle(lab: Any, name: str, before: Snapshot, now: Snapshot, booting: list) -> list[str]:
    """Domain ``name`` as ``before`` had it: active on exactly one host (or, if it was off, on none)."""
    was = before.named(name)
    ran_on = [d.host for d in was if d.active]
    present = now.named(name)
    active = {d.host: d for d in present if d.active}
    done = []
    if not ran_on:                       # defined but off before: off again, still defined
        for host in active:
            _on_domain(lab, host, name, lambda d: d.destroy())
            done.append(f"stopped {name} on {host} (it was off before the test)")
        if not present:
            _define(lab, was[0])
            done.append(f"defined {name} again on {was[0].host}")
        for dom in present:
            if dom.host not in {d.host for d in was} and dom.persistent:
                _on_domain(lab, dom.host, name, lambda d: d.undefine())
                done.append(f"removed the new definition of {name} on {dom.host}")
        return done
    home = ran_on[0]
    running = [h for h, d in active.items() if not d.paused]
    keep = running[0] if len(running) == 1 else home if home in active else min(active, default=None)
    for host, dom in active.items():
        if host != keep:
            _on_domain(lab, host, name, lambda d: d.destroy())
            done.append(f"stopped the second copy of {name} on {host} ({dom.state})")
    if keep is None:
        keep = home if home in {d.host for d in present} else present[0].host if present else home
        if keep not in {d.host for d in present}:
            _define(lab, next(d for d in was if d.host == home))
            done.append(f"defined {name} again on {keep}")
        booting.append((name, keep, len(lab.guest(name).console(keep).ready)))
        _on_domain(lab, keep, name, lambda d: d.create())
        done.append(f"started {name} again on {keep} (it ran nowhere)")
    elif active[keep].paused:
        done += _resume(lab, name, keep, active[keep], booting)
    for dom in present:
        if dom.host != keep and dom.persistent:
            _on_domain(lab, dom.host, name, lambda d: d.undefine() if not d.isActive() else None)
            done.append(f"removed the leftover definition of {name} on {dom.host}")
    return done


def _resume(lab: Any, name: str, host: str, dom: Domain, booting: list) -> list[str]:
    import libvirt

    try:
        _on_domain(lab, host, name, lambda d: d.resume())
        return [f"resumed {name} on {host} ({dom.state})"]
    except libvirt.libvirtError:         # e.g. paused after a failed post-copy: start it afresh
        booting.append((name, host, len(lab.guest(name).console(host).ready)))
        _on_domain(lab, host, name, lambda d: (d.destroy(), d.create()))
        return [f"restarted {name} on {host}: it was {dom.state} and could not be resumed"]


def _define(lab: Any, dom: Domain) -> None:
    def run() -> None:
        conn = lab.host(dom.host).connect()
        try:
            conn.defineXML(dom.xml)
        finally:
            conn.close()
    _limited(f"defining {dom.name} on {dom.host}", run, timeout=60)


# --- processes a test started -----------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state letter, start time) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def cmdline(pid: int) -> str:
    """A process's command line, "?" when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


class ChildProcesses:
    """The live processes this (pytest) process started, so a test's leftovers can be ended."""

    def __init__(self) -> None:
        self.me = os.getpid()
        self.at_start = self.current()

    def current(self) -> set[tuple[int, int]]:
        """(pid, start time) of each live direct child (a zombie is not live)."""
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _proc_stat(int(entry))
                if stat and stat[0] == self.me and stat[1] != "Z":
                    found.add((int(entry), stat[2]))
        return found

    def end_new(self, grace: float = 30.0) -> list[str]:
        """End the children started since this object was made, with their process trees.

        SIGTERM first (a `labmig migrate live` then aborts and rolls back its migration), SIGKILL
        after ``grace`` s. A child leading its own process group gets the signal as a group.
        """
        strays = sorted(self.current() - self.at_start)
        if not strays:
            return []
        words = [f"ended process {pid} the test left running: {cmdline(pid)[:160]}" for pid, _ in strays]
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for pid, _ in strays:
                _signal_tree(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(_live(pid) for pid, _ in strays):
                time.sleep(0.1)
            if not any(_live(pid) for pid, _ in strays):
                break
        return words


def _live(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[1] != "Z"


def environment(pid: int) -> dict[str, str]:
    """A process's environment ({} when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children …)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat:
                parents.setdefault(stat[0], []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_tree(pid: int, sig: int) -> None:
    try:
        group = os.getpgid(pid)
        if group == pid and group != os.getpgrp():
            os.killpg(group, sig)
        for target in [pid] + descendants(pid):
            os.kill(target, sig)
    except ProcessLookupError:
        pass


# --- waits that say what the lab looked like --------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, lab: Any, interval: float = 0.2) -> Any:
    """``predicate()``'s first true value; fails after ``timeout`` s saying ``what`` and the lab's state."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s.\n{describe(lab)}", pytrace=False)
        time.sleep(interval)


def communicate(proc: subprocess.Popen, timeout: float, what: str, lab: Any) -> tuple[str, str]:
    """``proc.communicate()``; after ``timeout`` s the lab's state is read, then the process ended
    (SIGTERM, SIGKILL) and the test failed with both and what the process had written."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        state = describe(lab)
    err = ""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=30)
            break
        except subprocess.TimeoutExpired:
            continue
    pytest.fail(f"{what} had not ended within {timeout:.0f} s.\nThe lab then:\n{state}\n"
                f"Its stderr once it was ended (SIGTERM):\n{(err or '')[-3000:]}", pytrace=False)


def run_cli(*args: str, lab: Any, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``labmig ARGS`` on ``lab``; a run past ``timeout`` s fails with the lab's state."""
    proc = subprocess.Popen([sys.executable, "-m", "labmig", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {}), "LABMIG_LAB": lab.name})
    out, err = communicate(proc, timeout, f"`labmig {' '.join(args)}`", lab)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# --- every lab on this machine, read from files ------------------------------------------------


def lab_names() -> set[str]:
    """Labs with anything on this machine: run or state directory, or a namespace."""
    names = set()
    for root in (RUN_ROOT, STATE_ROOT):
        if root.is_dir():
            names |= {p.name for p in root.iterdir() if p.is_dir()}
    netns = Path("/run/netns")
    if netns.is_dir():
        names |= {p.name.rsplit("-", 1)[0] for p in netns.iterdir()
                  if re.fullmatch(r"[a-z][a-z0-9]{0,11}-(lab1|lab2|client)", p.name)}
    return names


def footprint(name: str) -> dict[str, Any]:
    """What lab ``name`` has on this machine, from files only (no daemon is asked, nothing written):
    directories, namespaces, libvirt sockets, and per host the domains defined and those running
    (with libvirt's domain id, which changes whenever one is started or migrated in)."""
    layout = make_layout(name)
    found: dict[str, Any] = {
        "run dir": layout.run_dir.exists(), "state dir": layout.state_dir.exists(),
        "namespaces": sorted(n for n in [h.netns for h in layout.hosts] + [layout.client_netns]
                             if (Path("/run/netns") / n).exists()),
    }
    for host in layout.hosts:
        defined = host.state_dir / "etc-libvirt" / "qemu"
        status = host.run_dir / "run-libvirt" / "qemu"
        running = {}
        for path in sorted(status.glob("*.xml")) if status.is_dir() else []:
            match = re.search(r"<domain type='\w+' id='(\d+)'", path.read_text(errors="replace"))
            running[path.stem] = match.group(1) if match else "?"
        found[host.name] = {
            "libvirt socket": host.socket_outside.exists(),
            "defined": sorted(p.stem for p in defined.glob("*.xml")) if defined.is_dir() else [],
            "running": running,
        }
    return found


def footprints(exclude: set[str]) -> dict[str, dict[str, Any]]:
    return {name: footprint(name) for name in sorted(lab_names() - exclude)}


def footprint_changes(before: dict[str, dict], after: dict[str, dict]) -> dict[str, str]:
    """lab name -> what changed between two ``footprints()``, in words."""
    changes = {}
    for name in sorted(set(before) | set(after)):
        was, now = before.get(name), after.get(name)
        if was == now:
            continue
        if was is None or now is None:
            changes[name] = "appeared during the run" if was is None else "disappeared during the run"
            continue
        parts = [f"{key}: {was.get(key)!r} -> {now.get(key)!r}" for key in sorted(set(was) | set(now))
                 if was.get(key) != now.get(key)]
        changes[name] = "; ".join(parts)
    return changes


def other_labs_verdict(changes: dict[str, str], test_lab: str = TEST_LAB) -> tuple[str | None, list[str]]:
    """(failure, warnings) for ``footprint_changes()`` of the labs other than the test lab.

    A change to the default lab fails the run: nothing but a test falling back to labmig's
    default name reaches it. A change to another lab is a warning, since another session
    (another engineer's `make test` with its own lab) may be using it meanwhile.
    """
    others = [f"lab {name!r} changed during the run (a test touched it, unless another session uses it: "
              f"then list it in LABMIG_TEST_SHARED_LABS): {words}"
              for name, words in changes.items() if name != DEFAULT_LAB]
    failure = None
    if DEFAULT_LAB in changes:
        failure = (f"the default lab {DEFAULT_LAB!r} changed during the run: {changes[DEFAULT_LAB]}. "
                   f"Every test must use only the test lab {test_lab!r}.")
    return failure, others


__all__ = ["TEST_LAB", "DEFAULT_LAB", "side_lab", "Snapshot", "snapshot", "describe", "restore", "ChildProcesses",
           "remove_guest", "cmdline", "descendants", "environment", "wait_until", "communicate", "run_cli", "footprints", "footprint_changes", "other_labs_verdict", "LabUnresponsive"]
