"""The harness of the cold-migration fault campaign: one guest, child ``labmig`` processes, end checks.

    Campaign        the lab, its guest, the journal folder, the seed; runs and starts child
                    ``labmig`` commands (``run``, ``start``), kills one after a delay
                    (``kill_after``), knows a normal run's wall time (``duration``: measured
                    once per kind, or given), and brings the VM back to a clean start
                    (``make_ready``: running on one host, no open journal)
    Child           a started ``labmig`` process, its output kept in files (a killed process's
                    ssh child may hold a pipe open; a file never blocks the reader)
    Verdict         what ``verify_end`` saw: passed or not, where the VM runs, the problems
    verify_end()    the check every case ends with (below)
    CampaignError   the harness itself cannot go on (the lab or the guest is broken)
    trial_rng()     the random source of one trial (below)
    finish_args()   the command line of ``revert``, ``confirm`` or ``confirm-delete``
                    (DURATION_KINDS: the runs whose normal wall time ``duration`` knows)
    other(), HOSTS  the lab's two hosts; marker_of(): a copy's incomplete mark

The end check: the VM is defined on exactly one host and runs there; the guest answers
with the expected boot counter (one higher when it booted again, from the copied disk on
a destination), the disk it runs from holds that counter and, past its first sector, the
reference digest taken when the guest was made (the counter is the only thing the guest
writes); named copies are bit-identical to a digest taken before the trial (a source
left untouched), absent (deleted by confirm), or kept; any other copy of the disk is
absent, marked incomplete, or holds the reference past its first sector (nothing
half-written left looking complete); and the VM's journal is closed, or awaits confirm
when the case says so. The placement is read once more at the end, so a VM that stops
shortly after the check fails it.

``trial_rng(case, i)`` seeds each trial from the campaign's seed, the case's name and the
trial's number: a failing trial is replayed by the same ``--seed`` (and, for the random
kill times, the same normal-run durations).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .journal import CRASH_ENV, Journal, JournalState, journal_dir
from .trials import SECTOR, disk_digest, make_guest

HOSTS = ("lab1", "lab2")
SHUTDOWN = ("--shutdown-timeout", "1s")
DURATION_KINDS = ("migrate", "revert", "confirm", "confirm-delete")


class CampaignError(RuntimeError):
    """The harness cannot go on: the lab or the guest is in a state it cannot repair."""


def other(host: str) -> str:
    return HOSTS[1] if host == HOSTS[0] else HOSTS[0]


def marker_of(path: Path) -> Path:
    """The incomplete mark the delta copy keeps beside a destination image until it verifies."""
    return path.with_name(f".{path.name}.incomplete")


@dataclass
class Child:
    proc: subprocess.Popen[bytes]
    started: float
    out_path: Path
    err_path: Path
    ended: float | None = None

    @property
    def seconds(self) -> float:
        """Wall time from the start to the end (or until now, while it runs)."""
        return (self.ended or time.monotonic()) - self.started

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def killed(self) -> bool:
        return self.proc.returncode == -signal.SIGKILL

    def wait(self, timeout: float = 300.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise CampaignError(f"`labmig` pid {self.pid} did not end within {timeout:.0f} s: killed") from None
        if self.ended is None:
            self.ended = time.monotonic()
        return code

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def tail(self, n: int = 300) -> str:
        return " ".join(self.stderr().split())[-n:]


@dataclass
class Verdict:
    ok: bool
    ended_on: str | None
    boot: int | None
    problems: list[str] = field(default_factory=list)

    def words(self) -> str:
        if self.ok:
            return f"runs on {self.ended_on} (boot {self.boot}), disks as expected"
        return "; ".join(self.problems)


@dataclass
class Campaign:
    """One guest on one lab, and the state of the campaign run against it.

    Creating one sets LABMIG_LAB and LABMIG_JOURNAL_DIR in this process too (and drops
    LABMIG_LOCK_DIR: the locks live beside the journals), so what runs in-process (the copy
    figures, ``Journal``) sees the lab, journals and locks the children see.
    """

    lab: Any
    vm: str
    index: int
    journal_root: Path
    seed: int = 0
    durations: dict[str, float] = field(default_factory=dict)
    pause_while: Path | None = None
    guest: Any = None
    reference: str = ""
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="labmig-campaign-")))

    def __post_init__(self) -> None:
        os.environ["LABMIG_LAB"] = self.lab.name
        os.environ["LABMIG_JOURNAL_DIR"] = str(self.journal_root)
        os.environ.pop(CRASH_ENV, None)
        os.environ.pop("LABMIG_LOCK_DIR", None)

    # -- the guest -------------------------------------------------------------------
    def make_guest(self) -> None:
        """A fresh guest on lab1 (random data, booted), no copy on lab2, no stale mark, its reference digest."""
        self.guest = make_guest(self.lab, self.vm, self.index)
        self.remove_copy("lab2")
        marker_of(self.disk("lab1")).unlink(missing_ok=True)
        self.reference = disk_digest(self.disk("lab1"), skip=SECTOR)

    def disk(self, host: str) -> Path:
        return Path(self.guest.disk_outside(host))

    def remove_copy(self, host: str) -> None:
        """Delete ``host``'s copy of the disk and its incomplete mark (the next copy there is full)."""
        path = self.disk(host)
        for p in (path, marker_of(path)):
            p.unlink(missing_ok=True)

    def home(self) -> str:
        running = [h for h, s in self.guest.where().items() if s == "running"]
        if len(running) != 1:
            raise CampaignError(f"{self.vm} runs on {running or 'no host'}, not on exactly one")
        return running[0]

    def boot(self, timeout: float = 90.0, at_least: int = 0) -> int | None:
        """The boot counter the guest reports, once it answers with one of ``at_least`` or more."""
        from ..errors import LabError

        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            try:
                got = self.guest.stat().get("boot")
                if isinstance(got, int):
                    seen = got
                    if got >= at_least:
                        return got
            except LabError:
                pass
            time.sleep(0.3)
        return seen

    def journal(self) -> Journal:
        return Journal(self.vm, journal_dir(self.journal_root))

    def journal_state(self) -> JournalState | None:
        return self.journal().state()

    def last_step(self) -> str | None:
        """The last step of the VM's open journal; None when it has none (never begun, or archived)."""
        try:
            state = self.journal_state()
        except Exception as exc:  # reported as the step: a journal the campaign cannot read is a finding
            return f"unreadable journal: {exc}"
        return state.last if state else None

    # -- child processes -------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in (CRASH_ENV, "LABMIG_LOCK_DIR")}
        env.update(LABMIG_LAB=self.lab.name, LABMIG_JOURNAL_DIR=str(self.journal_root), **extra)
        return env

    def start(self, *args: str, **env: str) -> Child:
        """``labmig ARGS`` as a child process (output to files), started now."""
        fd, out = tempfile.mkstemp(dir=self.work, suffix=".out")
        os.close(fd)
        err = Path(out).with_suffix(".err")
        with open(out, "wb") as fo, open(err, "wb") as fe:
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "labmig", *args], env=self.env(**env),
                                    stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        return Child(proc, started, Path(out), err)

    def run(self, *args: str, timeout: float = 300.0) -> Child:
        child = self.start(*args)
        child.wait(timeout)
        return child

    def kill_after(self, child: Child, delay: float) -> bool:
        """SIGKILL ``child`` (by its pid) ``delay`` s after its start unless it ended first; True if killed."""
        end = child.started + delay
        while child.proc.poll() is None and time.monotonic() < end:
            time.sleep(0.002)
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGKILL)
        child.wait(120)
        return child.killed

    def recover(self) -> tuple[int, list[dict[str, Any]], Child]:
        """``labmig recover --json``: its exit code, what it did per journal, the child."""
        child = self.run("recover", "--json")
        try:
            done = json.loads(child.stdout() or "[]")
        except ValueError:
            done = []
        return child.proc.returncode, done if isinstance(done, list) else [], child

    def wait_for_step(self, child: Child, steps: tuple[str, ...], timeout: float = 120.0) -> str | None:
        """Until the running ``child`` has journaled one of ``steps`` (returned), or ended (None)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and child.proc.poll() is None:
            try:
                state = self.journal_state()
            except Exception:  # a torn record being written: read again
                state = None
            if state is not None:
                hit = next((s for s in steps if state.reached(s)), None)
                if hit:
                    return hit
            time.sleep(0.02)
        return None

    def migrate(self, src: str, dst: str, *extra: str) -> Child:
        return self.run("migrate", "cold", self.vm, "--from", src, "--to", dst, *SHUTDOWN, *extra)

    # -- normal runs -------------------------------------------------------------------
    def duration(self, kind: str) -> float:
        """The wall time of a normal ``labmig`` run of ``kind`` (process start to exit), measured once."""
        if kind not in DURATION_KINDS:
            raise ValueError(kind)
        if kind not in self.durations:
            self._measure(kind)
        return self.durations[kind]

    def _measure(self, kind: str) -> None:
        self.make_ready()
        src = self.home()
        boots = self.boot() or 0
        mig = self.migrate(src, other(src))
        self._need(mig, "a normal cold migration")
        self.durations.setdefault("migrate", mig.seconds)
        self.boot(at_least=boots + 1)
        finish = "revert" if kind == "migrate" else kind
        done = self.run(*finish_args(finish, self.vm))
        self._need(done, f"a normal `labmig {' '.join(finish_args(finish, self.vm))}`")
        self.durations.setdefault(finish, done.seconds)
        self.boot(at_least=boots + 1)

    @staticmethod
    def _need(child: Child, what: str) -> None:
        if child.proc.returncode != 0:
            raise CampaignError(f"{what} failed (exit {child.proc.returncode}): {child.tail(600)}")

    # -- a clean start -----------------------------------------------------------------
    def wait_quiet(self) -> None:
        """Wait while the pause file exists (someone else needs the machine quiet)."""
        announced = False
        while self.pause_while is not None and self.pause_while.exists():
            if not announced:
                print(f"  (paused while {self.pause_while} exists)", flush=True)
                announced = True
            time.sleep(20)

    def make_ready(self) -> str:
        """Bring the VM to a clean start: running on exactly one host, no open journal.

        Returns what it had to do, in words ("" when nothing); recreates the guest (a new
        reference digest) when nothing else works.
        """
        done = []
        state = self.journal_state()
        if state is not None and not state.finished:
            if state.awaiting_confirm:
                done.append(f"revert rc={self.run('revert', self.vm).proc.returncode}")
            else:
                done.append(f"recover rc={self.recover()[0]}")
        where = self.guest.where()
        if len(where) == 1 and next(iter(where.values())) == "shut off":
            host = next(iter(where))
            conn = self.lab.host(host).connect()
            try:
                conn.lookupByName(self.vm).create()
            finally:
                conn.close()
            done.append(f"started on {host}")
            where = self.guest.where()
        state = self.journal_state()
        if list(where.values()) != ["running"] or (state is not None and not state.finished) \
                or self.boot(timeout=90) is None:
            self.make_guest()
            done.append(f"guest recreated (it was {where}, journal at {state.last if state else None})")
        return "; ".join(done)


def finish_args(kind: str, vm: str) -> tuple[str, ...]:
    """The command line ending a migration that awaits confirm: ``revert``, ``confirm`` or ``confirm-delete``."""
    return {"revert": ("revert", vm), "confirm": ("confirm", vm),
            "confirm-delete": ("confirm", vm, "--delete-source-disks")}[kind]


def verify_end(c: Campaign, host: str, boots: int, *, restarted: bool | None = True, awaiting: bool = False,
               same: dict[str, str] | None = None, gone: tuple[str, ...] = (), kept: tuple[str, ...] = ()
               ) -> Verdict:
    """Check the end state of a trial (see the module's docstring).

    ``host`` is where the VM must run; the guest must report ``boots + 1`` when ``restarted``,
    ``boots`` (and its disk be bit-identical to ``same[host]``) when not, either when None.
    ``same`` maps hosts to whole-file digests their copy must still have, ``gone`` names
    hosts whose copy must be absent, ``kept`` hosts whose copy must exist, complete.
    """
    same = same or {}
    problems: list[str] = []
    where = c.guest.where()
    running = [h for h, s in where.items() if s == "running"]
    ended_on = running[0] if len(running) == 1 else None
    if where != {host: "running"}:
        problems.append(f"the VM is at {where or 'no host'}, expected running on {host} only")
    seen = c.boot(timeout=90, at_least=boots + (1 if restarted else 0)) if ended_on else None
    if restarted is None and seen in (boots, boots + 1):
        restarted = seen == boots + 1
    want = boots + (1 if restarted else 0)
    if ended_on and seen != want:
        problems.append(f"the guest reports boot {seen}, expected {want}")
    if ended_on:
        from ..lab.guest import read_boot_counter

        path = c.disk(ended_on)
        counter = read_boot_counter(path)
        if counter != want:
            problems.append(f"the disk on {ended_on} holds boot counter {counter}, expected {want}")
        if disk_digest(path, skip=SECTOR) != c.reference:
            problems.append(f"the disk on {ended_on} differs from the original past its first sector")
        if restarted is False and ended_on in same and disk_digest(path) != same[ended_on]:
            problems.append(f"the disk on {ended_on} changed although the guest never stopped")
    for h in HOSTS:
        path = c.disk(h)
        if h in gone:
            if path.exists():
                problems.append(f"the disk on {h} should have been deleted")
            continue
        if h in same and h != ended_on and (not path.exists() or disk_digest(path) != same[h]):
            problems.append(f"the disk on {h} is not bit-identical to its state before the trial")
        if h in kept and (not path.exists() or marker_of(path).exists()):
            problems.append(f"the disk on {h} should have been kept, complete")
        if h != ended_on and path.exists() and not marker_of(path).exists() \
                and disk_digest(path, skip=SECTOR) != c.reference:
            problems.append(f"the copy on {h} is not marked incomplete but differs from the original")
    state = c.journal_state()
    if awaiting and (state is None or not state.awaiting_confirm):
        problems.append(f"the journal should await confirm; it is at {state.last if state else 'none'}")
    if not awaiting and state is not None and not state.finished:
        problems.append(f"the journal is left open at '{state.last}'")
    time.sleep(1.0)
    if ended_on and c.guest.where() != {ended_on: "running"}:
        problems.append(f"a second later the VM is at {c.guest.where()}")
    return Verdict(not problems, ended_on, seen, problems)


def trial_rng(seed: int, case: str, i: int) -> random.Random:
    """The random source of trial ``i`` of ``case``: the same for the same seed, whatever else runs."""
    return random.Random(f"{seed}:{case}:{i}")
