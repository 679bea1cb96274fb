"""Rollback and verification: the VM runs on exactly one host, and we say which.

    Verdict          ok, destination_clean, message in words
    Rollback         after a failed or aborted live migration: resume the guest on the
                     source if it was left paused, wait for the destination's daemon if it
                     died, remove whatever is left of the VM there (running or defined)
                     and the disks created for it, then check both hosts
    precreate_disks  Nova's pre_live_migration for block migration: empty images of the
                     same size and format on the destination, for QEMU's mirror to fill

Rollback only ever touches the destination's copy and the source's run state;
the source's disks are never written.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from ..errors import LabmigError
from .prechecks import GuestInfo, SharedStorageProbe

log = logging.getLogger(__name__)


@dataclass
class Verdict:
    ok: bool
    destination_clean: bool
    message: str


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
            xml = (f"<volume><name>{name}</name><capacity>{disk.capacity}</capacity>"
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


class Rollback:
    """Undo a live migration that did not finish. ``mig`` is the LiveMigration."""

    def __init__(self, mig: Any) -> None:
        self.mig = mig
        self.vm = mig.plan.vm
        self.source = mig.source
        self.destination = mig.destination

    def _reconnect(self, host: Any, wait: float) -> bool:
        # connect() keeps a live connection and replaces a dead one.
        deadline = time.monotonic() + wait
        while True:
            try:
                host.connect()
                return True
            except LabmigError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(1.0)

    def _state(self, host: Any) -> tuple[Any, int | None]:
        import libvirt

        dom = host.domain(self.vm)
        if dom is None:
            return None, None
        try:
            return dom, host.call("reading the VM state", dom.state)[0]
        except libvirt.libvirtError:
            return dom, None

    def run(self) -> Verdict:
        import libvirt

        notes: list[str] = []
        if not self._reconnect(self.source, 10):
            return Verdict(False, False, f"the source {self.source.name} cannot be reached: the VM's state is unknown")
        src_dom, src_state = self._state(self.source)
        dst_ok = self._reconnect(self.destination, self.mig.rollback_wait)
        dst_dom, dst_state = self._state(self.destination) if dst_ok else (None, None)

        if src_dom is None or src_state == libvirt.VIR_DOMAIN_SHUTOFF:
            if dst_state == libvirt.VIR_DOMAIN_RUNNING:
                return Verdict(False, False, f"{self.vm} runs on {self.destination.name}, not on the source: "
                               "the migration went through despite the error")
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
