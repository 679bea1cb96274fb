"""An on-disk journal of one cold migration, so a crash at any point can be recovered.

    Step          the names of the steps, in the order the flow writes them
    Journal       one JSON-lines file per VM: ``append`` is durable (flush + fsync)
                  before the step's action runs; ``state()`` reads it back
    JournalState  what the records say: the plan, the last step, what was copied
    journal_dir()  where journals live: $LABMIG_JOURNAL_DIR, else ~/.local/state/labmig/cold,
                   one folder per lab name ($LABMIG_LAB, as ``lab_scope()`` names it)

A VM's journal is ``VM.jsonl``, its name mapped by labmig.fsutil.name_to_file (the VM
locks use the same mapping), so "web 1" and "web_1" keep two journals. A journal written
under the older mapping (anything outside [A-Za-z0-9_.@+-] replaced by "_") is still
found: by its VM's own journal when the new file does not exist, and by ``all_journals``.

A record is written *before* the action it names has any effect that recovery
must undo, so the last record bounds how far the flow got. A crash while a line
is written leaves a torn last line (not JSON): the reader ignores it, since that
step never started, and the next ``append`` cuts it off before writing, so it
never ends up in the middle of the file. A damaged line anywhere else is a
JournalError naming the file and the line.
A finished journal (confirmed, reverted or rolled back) is moved to ``history/``.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InvalidInput, LabmigError
from ..fsutil import file_to_name, fsync_dir, name_to_file

log = logging.getLogger(__name__)


class Step:
    BEGIN = "begin"                            # plan written: XMLs, disks, hosts
    SHUTDOWN_REQUESTED = "shutdown-requested"  # guest asked to power off
    SOURCE_STOPPED = "source-stopped"          # the source domain is shut off
    DISK_COPYING = "disk-copying"              # one disk's copy starts (destination marked incomplete)
    DISK_COPIED = "disk-copied"                # one disk copied and verified
    DEST_DEFINED = "dest-defined"              # about to define on the destination
    SOURCE_UNDEFINED = "source-undefined"      # about to undefine on the source (XML kept here)
    DEST_STARTED = "dest-started"              # about to start on the destination
    GUEST_UP = "guest-up"                      # the guest answered on the destination: awaiting confirm
    CONFIRM_STARTED = "confirm-started"
    CONFIRMED = "confirmed"
    REVERT_STARTED = "revert-started"
    REVERTED = "reverted"
    ROLLBACK_STARTED = "rollback-started"
    ROLLED_BACK = "rolled-back"

    FLOW = (BEGIN, SHUTDOWN_REQUESTED, SOURCE_STOPPED, DISK_COPYING, DISK_COPIED,
            DEST_DEFINED, SOURCE_UNDEFINED, DEST_STARTED, GUEST_UP)
    FINAL = (CONFIRMED, REVERTED, ROLLED_BACK)
    ALL = FLOW + (CONFIRM_STARTED, CONFIRMED, REVERT_STARTED, REVERTED, ROLLBACK_STARTED, ROLLED_BACK)


CRASH_ENV = "LABMIG_COLD_CRASH_AT"   # fault injection: SIGKILL ourselves right after this step


def crash_if_asked(step: str) -> None:
    """The default crash hook: die (SIGKILL, no clean-up) after the step named in $LABMIG_COLD_CRASH_AT."""
    if os.environ.get(CRASH_ENV) == step:
        log.warning("fault injection: killing labmig after step %s", step)
        os.kill(os.getpid(), signal.SIGKILL)


class JournalError(LabmigError):
    """The journal cannot be read or is in a state that forbids the request."""


@dataclass
class JournalState:
    """What a journal's records say."""

    vm: str
    plan: dict[str, Any] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    disks_copied: list[str] = field(default_factory=list)   # destination paths verified
    options: dict[str, Any] = field(default_factory=dict)   # data of the last record

    @property
    def last(self) -> str | None:
        return self.steps[-1] if self.steps else None

    @property
    def finished(self) -> bool:
        return self.last in Step.FINAL

    @property
    def awaiting_confirm(self) -> bool:
        return self.last == Step.GUEST_UP

    def reached(self, step: str) -> bool:
        return step in self.steps


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.@+-]")   # lab folders; VM journals before name_to_file


def default_journal_root() -> Path:
    env = os.environ.get("LABMIG_JOURNAL_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "labmig" / "cold"


def lab_scope() -> str:
    """The folder name of the current lab ($LABMIG_LAB, default labmig) under a root."""
    return _SAFE_NAME.sub("_", os.environ.get("LABMIG_LAB") or "labmig")


def journal_dir(root: Path | None = None) -> Path:
    """Journals of the current lab (``$LABMIG_LAB`` keeps labs apart)."""
    return (root or default_journal_root()) / lab_scope()


def _parse(line: bytes) -> dict[str, Any] | None:
    """One journal line as a record, or None when it is not one (damaged or torn)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _torn_tail(data: bytes) -> tuple[int, bool]:
    """Where the journal's good records end, and whether a torn last line was left out.

    Each record is written whole, newline last, in one write: what follows the last
    newline and is not a record is a torn line (the crash came during that write).
    A damaged line that ends with its newline is not torn; the reader names it.
    Zero bytes at the end (a file system's unwritten tail) count for nothing.
    """
    content = data.rstrip(b"\x00")
    start = content.rfind(b"\n") + 1
    tail = content[start:]
    if not tail.strip():
        return start, False
    if _parse(tail) is None:
        return start, True
    return len(content), False          # a whole record that lacks only its newline


def _repair_tail(fd: int, path: Path) -> None:
    """Before appending: cut a torn last line off, so the file ends with a whole record and its newline."""
    size = os.fstat(fd).st_size
    data = b""
    while len(data) < size:
        chunk = os.pread(fd, size - len(data), len(data))
        if not chunk:
            break
        data += chunk
    end, torn = _torn_tail(data)
    newline = b"\n" if end and not data[:end].endswith(b"\n") else b""
    if data == data[:end] + newline:
        return
    if torn:
        log.warning("journal %s: cutting off a torn last record before writing", path)
    os.ftruncate(fd, end)
    if newline:
        _write_all(fd, newline)
    os.fsync(fd)


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a full disk, a signal): go on until all is written, or raise."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"journal write made no progress ({len(view)} bytes left)")
        view = view[written:]


def _first_vm(path: Path) -> str | None:
    """The VM named in a journal file's first record (None if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return str(json.loads(f.readline())["data"]["vm"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Journal:
    """The journal of one VM's cold migration."""

    def __init__(self, vm: str, directory: str | os.PathLike[str] | None = None,
                 path: str | os.PathLike[str] | None = None) -> None:
        if not vm or "/" in vm or "\x00" in vm:
            raise InvalidInput(f"bad VM name {vm!r}", "use the libvirt domain name")
        self.vm = vm
        self.directory = Path(directory) if directory else journal_dir()
        self.path = Path(path) if path else self.directory / (name_to_file(vm) + ".jsonl")
        if not path and not self.path.exists():
            legacy = self.directory / (_SAFE_NAME.sub("_", vm) + ".jsonl")
            if legacy != self.path and legacy.exists() and _first_vm(legacy) == vm:
                self.path = legacy      # written before VM names were percent-encoded
        elif not path:
            owner = _first_vm(self.path)
            if owner is not None and owner != vm:   # an older journal of a VM whose name mapped here
                raise JournalError(f"journal {self.path} belongs to VM {owner!r}, not {vm!r}",
                                   f"finish that migration first: `labmig recover '{owner}'`")
        self.crash_hook: Callable[[str], None] | None = crash_if_asked

    # -- reading --------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.exists()

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        end, torn = _torn_tail(data)
        if torn:
            log.warning("journal %s: ignoring a torn last record (the step it names never started)", self.path)
        records = []
        for i, line in enumerate(data[:end].split(b"\n")):
            if not line.strip():
                continue
            rec = _parse(line)
            if rec is None:
                raise JournalError(f"journal {self.path} is damaged at line {i + 1}: it is not a record",
                                   "only a torn last line is skipped; inspect the file, "
                                   "or move it away to forget that migration")
            if rec.get("step") not in Step.ALL:
                raise JournalError(f"journal {self.path} has an unknown step {rec.get('step')!r} at line {i + 1}",
                                   "it was written by another labmig version; finish that migration with it")
            records.append(rec)
        return records

    def state(self) -> JournalState | None:
        recs = self.records()
        if not recs:
            return None
        st = JournalState(vm=self.vm)
        for rec in recs:
            step = rec["step"]
            data = rec.get("data", {})
            if step == Step.BEGIN:
                st.plan = data
            elif step == Step.DISK_COPIED:
                st.disks_copied.append(data.get("dst", ""))
            st.steps.append(step)
            st.options = data
        if st.steps[0] != Step.BEGIN:
            raise JournalError(f"journal {self.path} does not start with a plan", "move it away")
        return st

    # -- writing --------------------------------------------------------------
    def begin(self, plan: dict[str, Any]) -> None:
        current = self.state()
        if current is not None and not current.finished:
            raise JournalError(f"an unfinished cold migration of {self.vm} is in the journal ({current.last})",
                               f"run `labmig recover`, or `labmig confirm {self.vm}` / `labmig revert {self.vm}`")
        if current is not None:
            self.archive()
        self.path = self.directory / (name_to_file(self.vm) + ".jsonl")   # a new journal: today's name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.append(Step.BEGIN, **plan)
        fsync_dir(self.directory)

    def append(self, step: str, **data: Any) -> None:
        """Write one record durably, then give fault injection its chance to crash."""
        if step not in Step.ALL:
            raise ValueError(step)
        line = json.dumps({"step": step, "t": time.time(), "data": data}, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _repair_tail(fd, self.path)
            _write_all(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        log.debug("journal %s: %s", self.vm, step)
        if self.crash_hook is not None:
            self.crash_hook(step)

    def archive(self) -> Path | None:
        """Move a journal away (to history/) so the VM can be migrated again."""
        if not self.path.exists():
            return None
        hist = self.directory / "history"
        hist.mkdir(parents=True, exist_ok=True)
        stamp = f"{self.path.stem}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
        for n in itertools.count():
            dest = hist / (f"{stamp}.jsonl" if n == 0 else f"{stamp}-{n}.jsonl")
            try:
                os.link(self.path, dest)     # never over an earlier journal of the same second
            except FileExistsError:
                continue
            break
        os.unlink(self.path)
        fsync_dir(hist)
        fsync_dir(self.directory)
        return dest


def all_journals(directory: str | os.PathLike[str] | None = None) -> list[Journal]:
    """Every journal of the current lab (finished or not), for `labmig recover`."""
    d = Path(directory) if directory else journal_dir()
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.jsonl")):
        vm = _first_vm(p)
        if vm is None:
            try:
                vm = file_to_name(p.stem)
            except UnicodeError:
                vm = p.stem
            if "/" in vm or "\x00" in vm:
                vm = p.stem
        out.append(Journal(vm, d, path=p))
    return out
