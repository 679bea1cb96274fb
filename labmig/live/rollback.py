"""Rollback and verification: the VM runs on exactly one host, and we say which.

    Verdict          ok, destination_clean, message in words
    Rollback         after a failed or aborted live migration: resume the guest on the
                     source if it was left paused, wait for the destination's daemon if it
                     died, remove whatever is left of the VM there (running or defined)
                     and the disks created for it, then check both hosts
    postcopy_settled     an interrupted post-copy finishing on its own, waited for
    drop_source_definition  the shut-off source copy a failed job left, undefined
    remove_source_disks  Nova's post-migration clean-up: the source's copies of block-migrated
                     disks go (only where the probe proved the storage local)
    precreate_disks  Nova's pre_live_migration for block migration: empty images of the
                     same size and format on the destination, for QEMU's mirror to fill
    record_created, read_created, forget_created   those images noted beside the VM's lock
                     while the run lasts, for ``labmig abort`` of a run whose labmig was killed

Rollback only ever touches the destination's copy and the source's run state;
the source's disks are never written.

Rollback never destroys the copy that holds the guest's newest state. It reads both
domains' state and reason (libvirt's virDomainGetState) and keeps the destination,
leaving the source as it is, when:

- the source is paused in post-copy (VIR_DOMAIN_PAUSED_POSTCOPY) or the destination
  runs in post-copy (VIR_DOMAIN_RUNNING_POSTCOPY): the migration ended on the
  destination, whether or not labmig's own switch-over call returned in time;
- either side shows a failed post-copy (VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
  VIR_DOMAIN_RUNNING_POSTCOPY_FAILED): the guest's memory is split between the hosts
  and neither copy may be destroyed;
- the destination runs (active, not paused) while the source does not (paused, shut
  off or unreadable): libvirt's confirm step failed after the guest had moved.

The verdict then says where the VM runs (``Verdict.runs_on``) and that the migration
ended on the destination. Constants a libvirt module may lack are read with getattr.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ..errors import LabmigError
from .prechecks import GuestInfo, SharedStorageProbe

log = logging.getLogger(__name__)


@dataclass
class Verdict:
    ok: bool
    destination_clean: bool
    message: str
    runs_on: str | None = None      # the host the VM was found running on, when the rollback kept it there


@dataclass
class CreatedVolume:
    directory: str
    name: str


def precreate_disks(destination: Any, guest: GuestInfo) -> list[CreatedVolume]:
    """Create empty images on the destination at the source's paths; returns what to remove on rollback."""
    import libvirt

    created = []
    for disk in guest.disks:
        if disk.shared:
            continue
        directory, name = os.path.split(disk.path)
        pool, ours = SharedStorageProbe.pool_for(destination, directory)
        if pool is None:
            raise LabmigError(f"{directory} does not exist on {destination.name}",
                              "create it there first; block migration writes the disk at the same path")
        try:
            fmt = disk.fmt if disk.fmt in ("qcow2", "raw") else "raw"
            xml = (f"<volume><name>{escape(name)}</name><capacity>{disk.capacity}</capacity>"
                   f"<target><format type='{fmt}'/></target></volume>")
            destination.call("creating the disk for block migration", pool.createXML, xml, 0)
            created.append(CreatedVolume(directory, name))
            log.info("created %s/%s (%d bytes) on %s", directory, name, disk.capacity, destination.name)
        except libvirt.libvirtError as exc:
            raise LabmigError(f"cannot create {disk.path} on {destination.name}: {exc.get_error_message()}",
                              "is there a leftover file of that name? remove it on the destination") from exc
        finally:
            if ours:
                pool.destroy()
    return created


def remove_volumes(host: Any, volumes: list[CreatedVolume]) -> list[str]:
    """Delete volumes we created; returns the paths that could not be removed."""
    import libvirt

    left = []
    for vol in volumes:
        pool, ours = SharedStorageProbe.pool_for(host, vol.directory)
        if pool is None:
            left.append(os.path.join(vol.directory, vol.name))
            continue
        try:
            pool.refresh(0)
            pool.storageVolLookupByName(vol.name).delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                left.append(os.path.join(vol.directory, vol.name))
        finally:
            if ours:
                pool.destroy()
    return left


def remove_source_disks(source: Any, guest: GuestInfo, local_dirs: set[str]) -> tuple[list[str], list[str]]:
    """After a verified block migration: delete the source's copies of the disks, as Nova does.

    Nova's post-live-migration clean-up destroys the source's disks when they are not on
    shared storage (ComputeManager._post_live_migration → driver.cleanup with
    destroy_disks); so the VM can come back later to a host with no leftover image at
    its path. Only disks whose directory the shared-storage probe *proved* local are
    deleted; any other is kept. Returns (removed paths, kept or failed paths).
    """
    copied = [d.path for d in guest.disks if not d.shared]
    local = [p for p in copied if os.path.dirname(p) in local_dirs]
    failed = remove_volumes(source, [CreatedVolume(*os.path.split(p)) for p in local])
    return [p for p in local if p not in failed], [p for p in copied if p not in local] + failed


class Rollback:
    """Undo a live migration that did not finish. ``mig`` is the LiveMigration."""

    def __init__(self, mig: Any) -> None:
        self.mig = mig
        self.vm = mig.plan.vm
        self.source = mig.source
        self.destination = mig.destination

    def _reconnect(self, host: Any, wait: float) -> bool:
        """Reach ``host`` within ``wait`` s; the first failure is said at once, not after the wait."""
        deadline = time.monotonic() + wait
        said = False
        while True:
            try:
                host.connect()      # keeps a live connection and replaces a dead one
                return True
            except LabmigError as exc:
                if not said:
                    said = True
                    self.mig.note("rollback", f"{host.name}'s libvirt daemon does not answer ({exc.message}); "
                                  f"waiting up to {wait:.0f} s for it before checking what is left there")
                if time.monotonic() > deadline:
                    return False
                time.sleep(1.0)

    def _state(self, host: Any) -> tuple[Any, int | None]:
        dom, state, _ = self._state_reason(host)
        return dom, state

    def _state_reason(self, host: Any) -> tuple[Any, int | None, int | None]:
        """The VM's domain on ``host``, its state and the state's reason (None when unreadable)."""
        import libvirt

        dom = host.domain(self.vm)
        if dom is None:
            return None, None, None
        try:
            state, reason = host.call("reading the VM state", dom.state)[:2]
            return dom, state, reason
        except libvirt.libvirtError:
            return dom, None, None

    def _keep_destination(self, src_state: int | None, src_reason: int | None,
                          dst_state: int | None, dst_reason: int | None, src_defined: bool = True) -> Verdict | None:
        """The verdict when the destination holds the guest's newest state, so it must stay; else None."""
        import libvirt

        def reason_is(state: int | None, reason: int | None, base: str, *names: str) -> bool:
            wanted = [getattr(libvirt, n, None) for n in names]
            return state == getattr(libvirt, base) and reason is not None and reason in wanted

        src, dst, vm = self.source.name, self.destination.name, self.vm
        on_src = _words(src_state, src_reason) if src_defined else "not defined there"
        check = f"check with `virsh -c {self.destination.uri} domstate --reason {vm}` and the same on {src}"
        failed = ("VIR_DOMAIN_PAUSED_POSTCOPY_FAILED",)
        if reason_is(src_state, src_reason, "VIR_DOMAIN_PAUSED", *failed) or \
                reason_is(dst_state, dst_reason, "VIR_DOMAIN_PAUSED", *failed) or \
                reason_is(dst_state, dst_reason, "VIR_DOMAIN_RUNNING", "VIR_DOMAIN_RUNNING_POSTCOPY_FAILED"):
            return Verdict(False, False, f"Not rolled back: post-copy failed, {vm}'s memory is split between {src} "
                           f"({on_src}) and {dst} ({_words(dst_state, dst_reason)}); "
                           f"neither copy was touched, neither can run alone ({check})")
        runs = dst_state == libvirt.VIR_DOMAIN_RUNNING
        if reason_is(src_state, src_reason, "VIR_DOMAIN_PAUSED", "VIR_DOMAIN_PAUSED_POSTCOPY") or \
                reason_is(dst_state, dst_reason, "VIR_DOMAIN_RUNNING", "VIR_DOMAIN_RUNNING_POSTCOPY"):
            how = "in post-copy"
        elif runs and src_state != libvirt.VIR_DOMAIN_RUNNING:
            how = "after the guest had moved"
        else:
            return None
        where = f"{vm} runs on {dst}" if runs else f"{vm}'s newest state is on {dst}"
        return Verdict(False, False, f"Not rolled back: {where} ({_words(dst_state, dst_reason)}): "
                       f"the migration ended on the destination {how}; the copy on {src} was left as it is "
                       f"({on_src}) ({check})",
                       runs_on=dst if runs else None)

    def run(self) -> Verdict:
        import libvirt

        notes: list[str] = []
        if not self._reconnect(self.source, 10):
            return Verdict(False, False, f"the source {self.source.name} cannot be reached: the VM's state is unknown")
        src_dom, src_state, src_reason = self._state_reason(self.source)
        dst_ok = self._reconnect(self.destination, self.mig.rollback_wait)
        dst_dom, dst_state, dst_reason = self._state_reason(self.destination) if dst_ok else (None, None, None)
        kept = self._keep_destination(src_state, src_reason, dst_state, dst_reason, src_dom is not None)
        if kept is not None:
            log.warning("rollback of %s: %s", self.vm, kept.message)
            return kept

        if src_dom is None or src_state == libvirt.VIR_DOMAIN_SHUTOFF:
            return Verdict(False, False, f"{self.vm} no longer runs on {self.source.name}: it cannot be rolled back "
                           f"(start it again there with virsh -c {self.source.uri} start {self.vm})")

        if dst_dom is not None:
            try:
                if dst_dom.isActive():
                    self.destination.call("stopping the destination's copy", dst_dom.destroy)
                    notes.append(f"stopped the half-migrated copy on {self.destination.name}")
                if dst_dom.isPersistent():
                    self.destination.call("removing the destination's definition", dst_dom.undefine)
                    notes.append(f"removed its definition on {self.destination.name}")
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    log.warning("cleaning the destination failed: %s", exc)

        if src_state == libvirt.VIR_DOMAIN_PAUSED:
            try:
                self.source.call("resuming the guest", src_dom.resume)
                notes.append(f"resumed the guest on {self.source.name}")
            except libvirt.libvirtError as exc:
                log.warning("resume failed: %s", exc)

        left: list[str] = []
        if dst_ok and self.mig._created_volumes:
            left = remove_volumes(self.destination, self.mig._created_volumes)
            if not left:
                notes.append("removed the disks created for block migration")

        # Check, do not assume.
        _, src_state = self._state(self.source)
        running = src_state == libvirt.VIR_DOMAIN_RUNNING
        if dst_ok:
            clean = self._wait_gone(self.destination, 15) and not left
        else:
            clean = False
        parts = []
        parts.append(f"{self.vm} runs on {self.source.name}" if running
                     else f"{self.vm} is NOT running on {self.source.name} (state {src_state})")
        if not dst_ok:
            parts.append(f"{self.destination.name} did not answer within {self.mig.rollback_wait:.0f} s: "
                         "its cleanliness could not be checked")
        else:
            parts.append(f"{self.destination.name} is clean" if clean
                         else f"{self.destination.name} still holds {self.vm} or its disks")
        message = "Rolled back: " + ", ".join(parts) + (f" ({'; '.join(notes)})" if notes else "")
        return Verdict(running and clean, clean, message)

    def _wait_gone(self, host: Any, wait: float) -> bool:
        deadline = time.monotonic() + wait
        while True:
            dom, _ = self._state(host)
            if dom is None:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)

    def verify_on_destination(self) -> Verdict:
        """After a successful job: the VM runs on the destination and nowhere else."""
        import libvirt

        dst_dom, dst_state = self._state(self.destination)
        src_dom, _ = self._state(self.source)
        src_active = bool(src_dom is not None and src_dom.isActive())
        ok = dst_state == libvirt.VIR_DOMAIN_RUNNING and not src_active
        if ok:
            defined = " (still defined, shut off, on the source)" if src_dom is not None else ""
            return Verdict(True, False, f"{self.vm} runs on {self.destination.name} only{defined}")
        return Verdict(False, False, f"after the job {self.vm} is in state {dst_state} on {self.destination.name}"
                       f" and {'active' if src_active else 'inactive'} on {self.source.name}")


def _words(state: int | None, reason: int | None) -> str:
    """A domain state and its reason in words, as far as libvirt's module names them."""
    import libvirt

    if state is None:
        return "state unreadable"
    names = {"VIR_DOMAIN_RUNNING": "running", "VIR_DOMAIN_PAUSED": "paused", "VIR_DOMAIN_SHUTOFF": "shut off"}
    words = next((w for n, w in names.items() if getattr(libvirt, n, None) == state), f"state {state}")
    reasons = {"VIR_DOMAIN_PAUSED": {"VIR_DOMAIN_PAUSED_MIGRATION": "for the migration",
                                     "VIR_DOMAIN_PAUSED_POSTCOPY": "in post-copy",
                                     "VIR_DOMAIN_PAUSED_POSTCOPY_FAILED": "after a failed post-copy"},
               "VIR_DOMAIN_RUNNING": {"VIR_DOMAIN_RUNNING_POSTCOPY": "in post-copy",
                                      "VIR_DOMAIN_RUNNING_POSTCOPY_FAILED": "after a failed post-copy"}}
    for base, table in reasons.items():
        if getattr(libvirt, base, None) == state:
            words += next((" " + w for n, w in table.items() if reason is not None
                           and getattr(libvirt, n, None) == reason), "")
    return words


def postcopy_settled(mig: Any, wait: float) -> bool:
    """Wait up to ``wait`` s for an interrupted post-copy to finish on its own; True once it has.

    Nothing can roll post-copy back: the destination runs the guest and holds its newest
    pages. A cut short enough for TCP to ride out (or for libvirt's keepalive to give up
    on the job while QEMU's stream lives on) ends with QEMU completing the post-copy
    once the link is back: the destination running with a reason other than post-copy
    (libvirt's VIR_DOMAIN_RUNNING_MIGRATED), the source shut off or gone.
    """
    import libvirt

    postcopy = {getattr(libvirt, n) for n in ("VIR_DOMAIN_RUNNING_POSTCOPY", "VIR_DOMAIN_RUNNING_POSTCOPY_FAILED")
                if hasattr(libvirt, n)}
    checker = Rollback(mig)
    deadline = time.monotonic() + wait
    while True:
        try:
            _, dst_state, dst_reason = checker._state_reason(mig.destination)
            src_dom, src_state, _ = checker._state_reason(mig.source)
            if dst_state == libvirt.VIR_DOMAIN_RUNNING and dst_reason not in postcopy and \
                    (src_dom is None or src_state == libvirt.VIR_DOMAIN_SHUTOFF):
                return True
        except (LabmigError, libvirt.libvirtError):
            log.debug("post-copy settle: a host did not answer", exc_info=True)
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


def drop_source_definition(mig: Any) -> str | None:
    """After a move that libvirt's job did not finish itself: undefine the shut-off source copy.

    A post-copy whose job failed (libvirt's keepalive) but whose QEMU completed leaves the
    source defined and shut off: VIR_MIGRATE_UNDEFINE_SOURCE acts only when the job succeeds.
    Returns what was done, in words, or None.
    """
    import libvirt

    if not mig.plan.options.undefine_source:
        return None
    dom = mig.source.domain(mig.plan.vm)
    if dom is None or mig.source.call("reading the VM state", dom.state)[0] != libvirt.VIR_DOMAIN_SHUTOFF:
        return None
    mig.source.call("removing the source's definition", dom.undefine)
    return f"removed the shut-off definition on {mig.source.name}"


def _created_record(vm: str) -> Path:
    from ..vmlock import lock_path

    return lock_path(vm).with_suffix(".created.json")


def record_created(vm: str, destination: Any, volumes: list[CreatedVolume]) -> None:
    """Note, beside the VM's lock, the disks made for a block migration while it runs.

    If labmig is killed, libvirt's job goes on and ``labmig abort`` ends it; this record
    tells abort which files on the destination are the half-copied disks to remove.
    """
    path = _created_record(vm)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"destination": destination.name, "uri": destination.uri,
              "volumes": [[v.directory, v.name] for v in volumes]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def forget_created(vm: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _created_record(vm).unlink()


def read_created(vm: str) -> tuple[str, list[CreatedVolume]] | None:
    """(destination URI, volumes) a killed block migration of ``vm`` left, or None."""
    try:
        record = json.loads(_created_record(vm).read_text())
        return str(record["uri"]), [CreatedVolume(str(d), str(n)) for d, n in record["volumes"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable record of created disks for %s: %s", vm, exc)
        return None
