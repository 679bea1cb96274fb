"""Cold migration over libvirt: power off, copy the disks through ssh, define and boot on the target.

    ColdRunOptions shutdown / boot deadlines, block size, verification digest, confirm choices
                   (the knobs of a real run; the simulated cold strategy's own options are
                   labmig.strategies.ColdOptions)
    ColdPlan       VM + source + destination + options, as plain data; a view of a cold
                   MigrationSpec (labmig.spec): ``ColdPlan.from_spec(spec)``
    ColdMigration  context manager making a plan real: ``precheck()``, ``run()`` → MigrationResult
                   (kind "cold"; phases shutdown, disk, boot), with the journal written
                   before each step and a rollback on any failure before the guest is up
    confirm(), revert(), recover()   finish or undo a migration awaiting confirm; bring a
                   half-done one (labmig was killed) to exactly one host

The flow, each step journaled first (see :mod:`labmig.cold.journal`): pre-checks →
shut the guest down (ACPI, then forced after the deadline) → per local disk: the
block-level delta copy to the destination's helper, verified → define on the
destination → undefine on the source (its definition stays in the journal for a
revert) → start on the destination → wait for the guest → awaiting confirm.
Disks on shared storage are not copied (and the result says so). ``run()`` holds the
VM's lock (labmig.vmlock) throughout, so a second labmig process cannot act on the VM.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable

from ..blockcopy import VERIFY_MODES
from ..errors import InvalidInput, LabmigError, MigrationFailed, PrecheckFailed
from ..model import Event, MigrationResult, Outcome, TimelinePoint
from ..remote.samefile import LocalView, same_file
from ..units import format_duration, format_size, parse_duration, parse_size
from ..vmlock import vm_lock
from . import domxml
from .hostops import HostOps, recover_journal
from .journal import CRASH_ENV, Journal, Step, crash_if_asked
from .sides import ColdHost, cold_host

if TYPE_CHECKING:
    from ..spec import MigrationSpec

log = logging.getLogger(__name__)

CRASH_POINTS = Step.FLOW + ("disk-partial",)   # where the crash trials kill labmig (see journal.CRASH_ENV)


@dataclass
class ColdRunOptions:
    shutdown_timeout: float = 60.0        # graceful ACPI shutdown, then forced off
    boot_timeout: float = 120.0           # guest up on the destination
    block_size: int = 64 * 1024
    verify: str = "full"                  # blockcopy's verify mode: full, sha256 or fast
    ready_marker: str | None = None       # regex in the guest's console log meaning "up"
    auto_confirm: bool = False
    delete_source_disks: bool = False     # with confirm: remove the source's copies

    def __post_init__(self) -> None:
        self.shutdown_timeout = parse_duration(self.shutdown_timeout)
        self.boot_timeout = parse_duration(self.boot_timeout)
        self.block_size = parse_size(self.block_size)
        if self.shutdown_timeout < 0 or self.boot_timeout <= 0:
            raise InvalidInput("timeouts must be positive", "e.g. --shutdown-timeout 30s --boot-timeout 2min")
        if self.verify not in VERIFY_MODES:
            raise InvalidInput(f"unknown verify mode {self.verify!r}", "use " + ", ".join(VERIFY_MODES))
        if self.ready_marker:
            try:
                re.compile(self.ready_marker)
            except re.error as exc:
                raise InvalidInput(f"bad ready marker {self.ready_marker!r}: {exc}",
                                   "give a regular expression") from exc


@dataclass
class ColdPlan:
    vm: str
    source: str
    destination: str
    options: ColdRunOptions = field(default_factory=ColdRunOptions)

    def __post_init__(self) -> None:
        if not self.vm or not self.vm.strip():
            raise InvalidInput("no VM named", "give the VM's libvirt name")
        if not self.destination:
            raise InvalidInput("no destination host", "add --to HOST (a lab host name or a libvirt URI)")

    @classmethod
    def from_spec(cls, spec: "MigrationSpec") -> "ColdPlan":
        """The plan of a cold spec: its run options are ColdRunOptions, over what its strategy sets.

        The only way the cold backend turns a spec into a plan (labmig.backends).
        """
        from ..strategies import make_strategy

        spec.require_hosts()
        known = {f.name for f in fields(ColdRunOptions)}
        unknown = sorted(set(spec.run_options) - known)
        if unknown:
            raise InvalidInput(f"unknown cold run option(s) {', '.join(unknown)}",
                               f"known: {', '.join(sorted(known))}")
        run = {**(make_strategy(spec.strategy, spec.options_dict()).to_cold(spec) or {}), **spec.run_options}
        return cls(spec.vm.name, spec.source, spec.destination, ColdRunOptions(**run))

    def to_dict(self) -> dict[str, Any]:
        return {"vm": self.vm, "source": self.source, "destination": self.destination,
                "options": asdict(self.options)}


@dataclass
class DiskMove:
    target: str
    src: str            # path on the source host
    dst: str            # path on the destination host
    kind: str           # "local" (copied) or "shared" (left where it is)
    size: int = 0


def _refuse_one_destination_for_two_disks(local: list[DiskMove], destination: str) -> None:
    """Disks from two source image directories with one relative path would land on one file."""
    seen: dict[str, DiskMove] = {}
    for disk in local:
        first = seen.setdefault(disk.dst, disk)
        if first is not disk:
            raise PrecheckFailed(f"disks {first.target} ({first.src}) and {disk.target} ({disk.src}) would both be "
                                 f"copied to {disk.dst} on {destination}",
                                 "rename one of the two image files on the source (with the VM shut off)")


class ColdMigration:
    """``with ColdMigration(plan) as mig: result = mig.run()``."""

    def __init__(self, plan: ColdPlan, source: ColdHost | None = None, destination: ColdHost | None = None,
                 journal_dir: str | os.PathLike[str] | None = None,
                 on_point: Callable[[TimelinePoint], None] | None = None,
                 on_event: Callable[[Event], None] | None = None,
                 probe: Any = None, progress: bool = False) -> None:
        self.plan = plan
        self.opts = plan.options
        self._source, self._destination = source, destination
        self.journal = Journal(plan.vm, journal_dir)
        self.on_point, self.on_event, self.probe = on_point, on_event, probe
        self.progress = progress
        self.src: ColdHost
        self.dst: ColdHost
        self.disks: list[DiskMove] = []
        self.timeline: list[TimelinePoint] = []
        self.events: list[Event] = []
        self.copy_stats: list[dict[str, Any]] = []
        self._t0 = time.monotonic()
        self._agents: list[Any] = []

    # -- lifecycle --------------------------------------------------------------
    def __enter__(self) -> "ColdMigration":
        self.src = self._source or cold_host(self.plan.source)
        self.dst = self._destination or cold_host(self.plan.destination)
        return self

    def __exit__(self, *exc: object) -> None:
        for agent in self._agents:
            agent.close()
        self._agents.clear()

    def note(self, kind: str, message: str = "") -> None:
        """Record an event of the run that happened outside it (e.g. the lab link shaped for it)."""
        self._event(kind, message)

    def _event(self, kind: str, message: str = "") -> None:
        ev = Event(t=time.monotonic() - self._t0, kind=kind, message=message)
        self.events.append(ev)
        log.info("%s: %s %s", self.plan.vm, kind, message)
        if self.on_event:
            self.on_event(ev)

    def _point(self, phase: str, **kw: Any) -> None:
        pt = TimelinePoint(t=time.monotonic() - self._t0, phase=phase, **kw)
        self.timeline.append(pt)
        if self.on_point:
            self.on_point(pt)

    # -- pre-checks ---------------------------------------------------------------
    def precheck(self) -> list[str]:
        """Check everything that can be checked before changing anything; returns what was checked."""
        from .hostops import agent_for

        checks = []
        src_ops, dst_ops = HostOps(self.src.host), HostOps(self.dst.host)
        if self.src.host.uri == self.dst.host.uri or src_ops.host_uuid() == dst_ops.host_uuid():
            raise PrecheckFailed(f"source and destination are the same host ({self.src.name})",
                                 "pick another host with --to")
        state = self.journal.state()
        if state is not None and state.awaiting_confirm:
            raise PrecheckFailed(f"the last cold migration of {self.plan.vm} awaits confirm",
                                 f"run `labmig confirm {self.plan.vm}` or `labmig revert {self.plan.vm}` first")
        if state is not None and not state.finished:
            raise PrecheckFailed(f"{self.plan.vm} has an unfinished cold migration ({state.last})",
                                 "run `labmig recover` first")
        dom = src_ops.lookup(self.plan.vm)
        if dom is None:
            raise PrecheckFailed(f"no VM named {self.plan.vm!r} on {self.src.name}",
                                 f"`virsh -c {self.src.host.uri} list --all` shows its VMs")
        self.source_xml = src_ops.xml(dom)
        self.uuid = domxml.domain_uuid(self.source_xml)
        self.was_running = src_ops.is_active(dom)
        checks.append(f"VM {self.plan.vm} found on {self.src.name} ({'running' if self.was_running else 'shut off'})")
        if dst_ops.lookup(self.plan.vm) is not None or dst_ops.lookup_uuid(self.uuid) is not None:
            raise PrecheckFailed(f"{self.plan.vm} is already defined on {self.dst.name}",
                                 "undefine the stale copy there (virsh undefine) or pick another host")
        nets = domxml.read_networks(self.source_xml)
        for name in nets["network"]:
            if not dst_ops.has_network(name):
                raise PrecheckFailed(f"network {name!r} is not active on {self.dst.name}",
                                     f"define and start it there (virsh -c {self.dst.host.uri} net-start {name})")
        self.disks = []
        for disk in domxml.read_disks(self.source_xml):
            kind = self.src.classify(disk.path)
            if kind == "other":
                raise PrecheckFailed(f"disk {disk.target} ({disk.path}) is neither under {self.src.name}'s image "
                                     "directories nor on shared storage",
                                     "move it under " + ", ".join(self.src.image_dirs + self.src.shared_dirs))
            if kind == "shared":
                self.disks.append(DiskMove(disk.target, disk.path, disk.path, "shared"))
                continue
            dst_path = os.path.join(self.dst.image_dirs[0], self.src.relative(disk.path))
            user = dst_ops.disk_user(dst_path)
            if user is not None:
                raise PrecheckFailed(f"{dst_path} on {self.dst.name} is the disk of VM {user!r} there",
                                     "rename the disk on the source, or remove that VM")
            try:
                size = os.stat(self.src.local_path(disk.path)).st_size
            except OSError as exc:
                raise PrecheckFailed(f"cannot read disk {disk.path} on {self.src.name}: {exc.strerror}",
                                     "check the image file exists and is readable") from exc
            self.disks.append(DiskMove(disk.target, disk.path, dst_path, "local", size))
        local = [d for d in self.disks if d.kind == "local"]
        _refuse_one_destination_for_two_disks(local, self.dst.name)
        if local:
            agent = agent_for(self.dst)
            self._agents.append(agent)
            checks.append(f"disk helper on {self.dst.name} reachable over ssh")
            # A host given by URI says nothing about shared storage: ask the two sides whether
            # the destination's path is the source disk itself (same inode, or a token file
            # written by the destination and found by the source). Such a disk is not copied
            # (a copy onto itself) and never deleted.
            source_view = LocalView(self.src.local_path)
            for d in local:
                try:
                    how = same_file(agent, d.dst, source_view, d.src)
                except LabmigError as exc:
                    raise PrecheckFailed(f"cannot tell whether {d.dst} on {self.dst.name} is the source's disk "
                                         f"{d.src}: {exc.message}", exc.hint) from exc
                if how is not None:
                    d.kind = "shared"
                    checks.append(f"disk {d.target}: {d.dst} on {self.dst.name} is the source's own file ({how})")
            local = [d for d in local if d.kind == "local"]
            need = free = 0
            for d in local:
                st, _ = agent.call("stat", path=d.dst)
                alloc = os.stat(self.src.local_path(d.src)).st_blocks * 512
                need += max(0, alloc - (st["allocated"] if st["exists"] else 0))
                free = st["free"]
            if need > free:
                raise PrecheckFailed(f"{self.dst.name} has {format_size(free)} free for images, "
                                     f"the disks need up to {format_size(need)} more",
                                     "free space in the destination's image directory")
            for name in nets["bridge"]:
                if not agent.call("netdev", name=name)[0]["exists"]:
                    raise PrecheckFailed(f"bridge {name!r} does not exist on {self.dst.name}",
                                         "create it there, or attach the VM to a network both hosts have")
            checks.append(f"space for the disks on {self.dst.name} ({format_size(need)} needed)")
        for d in self.disks:
            if d.kind == "shared":
                checks.append(f"disk {d.target} on shared storage: not copied")
        paths = domxml.PathMap({s: self.dst.image_dirs[0] for s in self.src.image_dirs})
        for s, t in zip(self.src.log_dirs, self.dst.log_dirs, strict=False):
            paths.mapping[os.path.normpath(s)] = os.path.normpath(t)
        self.dest_xml = domxml.rewrite_for_host(self.source_xml, paths, {d.src: d.dst for d in self.disks})
        return checks

    # -- the flow -----------------------------------------------------------------
    def run(self) -> MigrationResult:
        """Migrate, holding the VM's lock (labmig.vmlock) for the whole run: another labmig
        process acting on the VM makes it raise VMBusy before anything changes."""
        with vm_lock(self.plan.vm):
            return self._run()

    def _run(self) -> MigrationResult:
        self._t0 = time.monotonic()
        state = self.journal.state()
        if state is not None and not state.finished and not state.awaiting_confirm:
            # A previous run was killed halfway: finish it first (as `labmig recover` would).
            for done in recover(self.plan.vm, journal_dir=self.journal.directory):
                self._event("recovered", done.words())
        checks = self.precheck()
        for c in checks:
            self._event("precheck", c)
        self.journal.begin({
            "vm": self.plan.vm, "uuid": self.uuid, "was_running": self.was_running,
            "source": self.src.describe(), "destination": self.dst.describe(),
            "source_xml": self.source_xml, "dest_xml": self.dest_xml,
            "disks": [asdict(d) for d in self.disks], "options": asdict(self.opts),
        })
        src_ops, dst_ops = HostOps(self.src.host), HostOps(self.dst.host)
        times: dict[str, float] = {}
        if self.probe is not None and self.was_running:
            self.probe.start()
        try:
            times["stop_begin"] = time.monotonic()
            if self.was_running:
                self.journal.append(Step.SHUTDOWN_REQUESTED)
                self._point("shutdown")
                forced = src_ops.shutdown(self.plan.vm, self.opts.shutdown_timeout)
                self._event("forced-off" if forced else "shut-down",
                            f"guest did not power off within {format_duration(self.opts.shutdown_timeout)}: forced off"
                            if forced else "guest powered off")
            self.journal.append(Step.SOURCE_STOPPED)
            times["stopped"] = time.monotonic()
            self._point("disk")
            for disk in self.disks:
                if disk.kind == "local":
                    self._copy(disk)
                else:
                    self._event("disk-shared", f"{disk.target}: on shared storage, not copied")
            times["copied"] = time.monotonic()
            self.journal.append(Step.DEST_DEFINED)
            dst_ops.define(self.dest_xml)
            self._event("defined", f"defined on {self.dst.name}")
            self.journal.append(Step.SOURCE_UNDEFINED)
            src_ops.undefine(self.plan.vm)
            if self.was_running:
                self.journal.append(Step.DEST_STARTED)
                self._point("boot")
                log_path, offset = self._console_log()
                dst_ops.start(self.plan.vm)
                self._event("started", f"started on {self.dst.name}")
                self._wait_guest(dst_ops, log_path, offset)
            times["up"] = time.monotonic()
        except BaseException as exc:
            self._stop_probe(wait=False)
            rolled = self._rollback(exc)
            if isinstance(exc, KeyboardInterrupt):
                raise
            where = f"{self.plan.vm} runs on {self.src.name} again" if rolled else \
                "the rollback did not finish: run `labmig recover`"
            msg = exc.message if isinstance(exc, LabmigError) else str(exc)
            raise MigrationFailed(f"cold migration of {self.plan.vm} failed: {msg}; {where}",
                                  getattr(exc, "hint", None) or "see the log (-v) for the step that failed",
                                  rolled_back=rolled) from exc
        self.journal.append(Step.GUEST_UP, downtime=times["up"] - times["stop_begin"])
        self.client_gap = self._stop_probe(wait=True)
        self._event("guest-up", f"{self.plan.vm} is up on {self.dst.name}: awaiting confirm")
        result = self._result(times)
        if self.opts.auto_confirm:
            confirm(self.plan.vm, delete_source_disks=self.opts.delete_source_disks,
                    journal_dir=self.journal.directory)
            result.message += "; confirmed"
        return result

    def _copy(self, disk: DiskMove) -> None:
        from .hostops import agent_for, copy_disk

        self.journal.append(Step.DISK_COPYING, dst=disk.dst, src=disk.src)
        agent = next((a for a in self._agents if a.target is self.dst.ssh), None) or agent_for(self.dst)
        if agent not in self._agents:
            self._agents.append(agent)
        base_sent, base_recv = agent.bytes_sent, agent.bytes_received
        partial = os.environ.get(CRASH_ENV) == "disk-partial"

        def progress(done: int, total: int) -> None:
            wire = agent.bytes_sent + agent.bytes_received - base_sent - base_recv
            self._point("disk", bytes_sent_total=wire, remaining_bytes=max(0, total - done))
            if partial and done >= total // 2:
                crash_if_asked("disk-partial")

        stats = copy_disk(self.src.local_path(disk.src), agent, disk.dst, self.opts.block_size,
                          self.opts.verify, progress, show_progress=self.progress)
        stats["target"] = disk.target
        self.copy_stats.append(stats)
        self.journal.append(Step.DISK_COPIED, dst=disk.dst, digest=stats["verify_digest"],
                            wire=stats["wire_sent"] + stats["wire_received"])
        self._event("disk-copied", f"{disk.target}: {format_size(stats['wire_sent'] + stats['wire_received'])} "
                    f"on the wire for {format_size(disk.size)} "
                    f"({stats['blocks_sent']} of {stats['blocks_total']} blocks sent)")

    def _marker(self) -> str | None:
        return self.opts.ready_marker or self.dst.ready_marker

    def _console_log(self) -> tuple[str | None, int]:
        if not self._marker():
            return None, 0
        import xml.etree.ElementTree as ET

        root = ET.fromstring(self.dest_xml)
        for el in root.iter():
            if el.tag == "log" and el.get("file"):
                path = el.get("file", "")
                break
            source = el.find("source") if el.tag == "serial" and el.get("type") == "file" else None
            if source is not None and source.get("path"):
                path = source.get("path", "")
                break
        else:
            return None, 0
        local = self.dst.local_path(path)
        try:
            return local, os.path.getsize(local)
        except OSError:
            return local, 0

    def _wait_guest(self, dst_ops: HostOps, log_path: str | None, offset: int) -> None:
        deadline = time.monotonic() + self.opts.boot_timeout
        marker_text = self._marker()
        marker = re.compile(marker_text.encode()) if marker_text else None
        while time.monotonic() < deadline:
            if not dst_ops.is_active(dst_ops.lookup(self.plan.vm)):
                raise MigrationFailed(f"{self.plan.vm} stopped while booting on {self.dst.name}",
                                      "read the guest's console log on the destination")
            if marker is None or log_path is None:
                return
            try:
                with open(log_path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    f.seek(offset if size >= offset else 0)
                    if marker.search(f.read()):
                        return
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        raise MigrationFailed(f"{self.plan.vm} did not come up on {self.dst.name} within "
                              f"{format_duration(self.opts.boot_timeout)}",
                              "raise --boot-timeout, or read the guest's console log on the destination")

    def _stop_probe(self, wait: bool) -> float | None:
        """Stop the client probe; first wait (a little) for the guest's first answer after boot."""
        probe, self.probe = self.probe, None
        if probe is None:
            return None
        if wait:
            deadline = time.monotonic() + 10.0
            answers = getattr(probe, "answers", None)
            guest = getattr(probe, "guest", None)
            if answers is not None:
                seen = len(answers)
                while len(answers) <= seen and time.monotonic() < deadline:
                    time.sleep(0.02)
            elif guest is not None and hasattr(guest, "stat"):
                while time.monotonic() < deadline:  # the lab guest answers its own service once up
                    try:
                        guest.stat()
                        break
                    except LabmigError:
                        time.sleep(0.05)
                time.sleep(0.2)
            else:
                time.sleep(0.5)
        return probe.stop()

    def _rollback(self, exc: BaseException) -> bool:
        log.warning("cold migration of %s failed (%s): rolling back", self.plan.vm, exc)
        self._event("rollback", str(exc))
        try:
            self.journal.append(Step.ROLLBACK_STARTED, reason=str(exc)[:500])
            state = self.journal.state()
            assert state is not None  # the step just appended is in it
            rplan = recover_journal(self.journal, state, self.src, self.dst)
            if rplan.unknown:   # the hosts show what the journal cannot explain: nothing was done
                log.error("rollback of %s: %s", self.plan.vm, rplan.reason)
            return rplan.target == "source"
        except Exception:
            log.exception("rollback of %s did not finish", self.plan.vm)
            return False

    def _result(self, times: dict[str, float]) -> MigrationResult:
        wire = sum(s["wire_sent"] + s["wire_received"] for s in self.copy_stats)
        shared = [d.target for d in self.disks if d.kind == "shared"]
        copied = [d.target for d in self.disks if d.kind == "local"]
        words = [f"shut down on {self.src.name} in {format_duration(times['stopped'] - times['stop_begin'])}"]
        if copied:
            words.append(f"copied {', '.join(copied)} ({format_size(wire)} on the wire) in "
                         f"{format_duration(times['copied'] - times['stopped'])}")
        if shared:
            words.append(f"{', '.join(shared)} on shared storage: no disk copy")
        words.append(f"up on {self.dst.name} after {format_duration(times['up'] - times['copied'])}")
        return MigrationResult(
            kind="cold", strategy="cold", backend="libvirt", outcome=Outcome.COMPLETED,
            total_time=times["up"] - self._t0, downtime=times["up"] - times["stop_begin"],
            vm=self.plan.vm, source=self.src.name, destination=self.dst.name,
            bytes_by_phase={"disk": wire}, client_interruption=getattr(self, "client_gap", None),
            message="; ".join(words) + "; awaiting confirm",
            timeline=self.timeline, events=self.events, plan=self.plan.to_dict(),
            extra={"phases": {"shutdown": times["stopped"] - times["stop_begin"],
                              "disk": times["copied"] - times["stopped"],
                              "boot": times["up"] - times["copied"]},
                   "disks": self.copy_stats, "shared_disks": shared, "awaiting_confirm": True,
                   "journal": str(self.journal.path)})


from .finish import confirm, recover, revert  # noqa: E402  (re-exported: the flow's other half)

__all__ = ["ColdRunOptions", "ColdPlan", "ColdMigration", "DiskMove", "confirm", "revert", "recover", "CRASH_ENV"]
