"""One labmig process at a time acts on a VM: a lock file per VM, held with flock.

    vm_lock(vm)    context manager: holds the VM's lock for the block, or raises VMBusy
                   at once (it never waits); re-entrant within one process
    VMBusy         another process holds the lock: names its pid, command, host and start
    Holder         what a lock file records: pid, host name, command, start time
    holder(vm)     who holds the VM's lock right now, read without taking it (for messages)
    held_here(vm)  whether this process holds it
    lock_dir()     where the lock files are: $LABMIG_LOCK_DIR/LAB, else a locks/ folder in
                   the cold journals' directory (labmig.cold.journal.journal_dir)
    lock_path(vm)  the VM's lock file: its name through labmig.fsutil.name_to_file, + ".lock"

Every command that changes a VM holds its lock for its whole run: a live migration
(LiveMigration, from its pre-checks to its rollback), a cold migration (ColdMigration.run,
the recovery of an unfinished journal at its start included), confirm, revert and the
recovery of a named VM. ``labmig recover`` with no VM named skips every journal whose
VM is locked and says so. ``labmig abort`` takes no lock (see labmig.commands.migrate).

The lock is ``flock(LOCK_EX | LOCK_NB)`` on the open file: the kernel drops it when the
holding process ends, however it ends (SIGKILL included), so a lock file whose recorded
pid is dead is simply free and taken by the next command; nothing has to clean up after
a crash. Lock files are never removed (removing one while another process opens it would
let two processes hold two different files); the holder empties its file on release, so
a record in a file means its process held the lock when it wrote it.

Re-entrant within one process: a registry keyed by lock file counts how often this
process entered the VM's lock, and the file is released when the last block ends. So a
comparison (a live leg, then a cold leg), or ColdMigration.run calling confirm() or
recover() that lock the same VM again, does not deadlock on itself. The unit is the
process, not the thread: two threads of one process share the lock, so a program that
runs migrations in threads (the notebook widgets) runs one per VM at a time itself;
``recover()`` with no VM named still skips a VM this process holds. The lock's
descriptor is not inherited by child processes (the ssh helper, libvirt's tools).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import InvalidInput, PrecheckFailed
from .fsutil import name_to_file

log = logging.getLogger(__name__)

LOCK_ENV = "LABMIG_LOCK_DIR"
_MAX_FILE_NAME = 200          # bytes of an encoded VM name (file systems allow 255 with the suffix)


@dataclass(frozen=True)
class Holder:
    """What the holder of a VM's lock wrote in its lock file."""

    pid: int
    host: str
    command: str
    started: float            # time.time() when it took the lock

    def words(self) -> str:
        since = time.strftime("%H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} ({self.command}, on {self.host}) since {since}"


class VMBusy(PrecheckFailed):
    """Another labmig process acts on the VM; this one changed nothing."""

    def __init__(self, vm: str, holder: Holder | None) -> None:
        self.vm, self.holder = vm, holder
        if holder is None:
            super().__init__(f"VM {vm} is being migrated by another labmig process",
                             "wait for it to finish, or see `labmig status`")
            return
        here = holder.host == socket.gethostname()
        gone = (f"if pid {holder.pid} is gone, the lock is already free (it ends with its process): "
                "run this command again")
        super().__init__(f"VM {vm} is being migrated by {holder.words()}",
                         f"wait for it to finish, or see `labmig status`; {gone}" if here else
                         f"wait for it to finish (on {holder.host}), or see `labmig status`; {gone}")


def lock_dir() -> Path:
    """Lock files of the current lab: ``$LABMIG_LOCK_DIR/LAB``, else ``locks/`` beside the journals."""
    from .cold.journal import journal_dir, lab_scope

    env = os.environ.get(LOCK_ENV)
    if env:
        return Path(env) / lab_scope()
    return journal_dir() / "locks"


def lock_path(vm: str, directory: str | os.PathLike[str] | None = None) -> Path:
    if not vm:
        raise InvalidInput("no VM named", "give the VM's libvirt name")
    name = name_to_file(vm)
    if len(name) > _MAX_FILE_NAME:
        raise InvalidInput(f"the VM name {vm[:40]!r}… is too long for labmig's lock and journal files",
                           "use a shorter libvirt name")
    return (Path(directory) if directory else lock_dir()) / (name + ".lock")


@dataclass
class _Held:
    fd: int
    depth: int


_held: dict[str, _Held] = {}       # lock file path -> this process's hold on it
_registry = threading.Lock()


def _command_line() -> str:
    argv = list(sys.argv) or ["python"]
    prog = os.path.basename(argv[0]) or "python"
    if prog == "__main__.py":       # python -m labmig
        prog = os.path.basename(os.path.dirname(argv[0]))
    text = " ".join([prog] + argv[1:])
    return text if len(text) <= 80 else text[:79] + "…"


def _read(fd: int) -> Holder | None:
    try:
        raw = os.pread(fd, 4096, 0)
        rec = json.loads(raw)
        return Holder(int(rec["pid"]), str(rec["host"]), str(rec["command"]), float(rec["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _take(vm: str, path: Path, command: str | None) -> int:
    """Open and flock ``path``; write our record. Raises VMBusy naming the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = None
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
            holder = _read(fd)
            os.close(fd)
            if holder is not None:
                break
            time.sleep(0.01)     # the holder has not written its record yet, or just emptied it
            continue
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "command": command or _command_line(), "started": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
        except OSError:
            os.close(fd)        # closing drops the flock
            raise
        return fd
    raise VMBusy(vm, holder)


def _release(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)     # a record in the file means a holder
    except OSError:
        log.debug("could not empty a lock file", exc_info=True)
    finally:
        os.close(fd)            # drops the flock


@contextlib.contextmanager
def vm_lock(vm: str, command: str | None = None,
            directory: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Hold ``vm``'s lock for the block, or raise VMBusy at once; re-entrant in one process.

    ``command`` is what the lock file records as the holder's command (default: this
    process's command line).
    """
    path = lock_path(vm, directory)
    key = str(path)
    with _registry:
        held = _held.get(key)
        if held is not None:
            held.depth += 1
        else:
            held = _held[key] = _Held(_take(vm, path, command), 1)
            log.debug("locked %s (%s)", vm, path)
    try:
        yield
    finally:
        with _registry:
            held.depth -= 1
            if held.depth == 0:
                del _held[key]
                _release(held.fd)
                log.debug("unlocked %s", vm)


def held_here(vm: str, directory: str | os.PathLike[str] | None = None) -> bool:
    """Whether this process holds ``vm``'s lock."""
    with _registry:
        return str(lock_path(vm, directory)) in _held


def holder(vm: str, directory: str | os.PathLike[str] | None = None) -> Holder | None:
    """Who holds ``vm``'s lock, read from its file without taking it (None: nobody).

    For messages only: a record left by a process killed outright is ignored when that
    pid is gone on this host; to act on a VM, take its lock.
    """
    try:
        fd = os.open(lock_path(vm, directory), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        found = _read(fd)
    finally:
        os.close(fd)
    if found is not None and found.host == socket.gethostname() and not _alive(found.pid):
        return None
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
