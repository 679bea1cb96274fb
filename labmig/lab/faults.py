"""Fault injection for the local lab: one call each, registered by name.

    Fault       name, what it does, its function and the parameters it takes
    FAULTS      registry name -> Fault (feeds ``labmig lab fault NAME``, widgets, tests)
    inject()    run a fault by name with keyword arguments

    link-cut        the inter-host link goes down (both ends)
    link-restore    the link comes back
    link-slow       token-bucket limit on the link (rate=bytes/s); link-slow rate=None lifts it
    kill-libvirtd   SIGKILL the libvirtd of a host (its QEMUs keep running, as on a real host)
    kill-qemu       SIGKILL the QEMU process of a domain on a host
    fill-disk       fill a host's local image directory (a size-limited file system) to the last byte
    unfill-disk     remove the filler again

Each function returns a short dict describing what it did, so a caller can put it
in a timeline event.
"""
from __future__ import annotations

import errno
import inspect
import os
import signal
from dataclasses import dataclass
from typing import Callable

from ..errors import InvalidInput, LabError
from . import netns

FILLER = ".labmig-fill"


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    fn: Callable[..., dict]

    @property
    def params(self) -> list[str]:
        return [p for p in inspect.signature(self.fn).parameters if p != "lab"]


def link_cut(lab) -> dict:
    netns.set_link(lab.layout, up=False)
    return {"link": "down"}


def link_restore(lab) -> dict:
    netns.set_link(lab.layout, up=True)
    return {"link": "up"}


def link_slow(lab, rate: float | None = 4 * 1024 * 1024) -> dict:
    lab.shape_link(None if rate is None else float(rate))
    return {"link_rate": lab.link_rate}


def kill_libvirtd(lab, host: str = "lab2") -> dict:
    h = lab.host(host)
    pid = h.libvirtd_pid()
    if not pid:
        raise LabError(f"libvirtd is not running on {host}", hint="`labmig lab up` starts it again")
    os.kill(pid, signal.SIGKILL)
    return {"host": host, "killed": "libvirtd", "pid": pid}


def kill_qemu(lab, host: str = "lab1", domain: str = "guest1") -> dict:
    h = lab.host(host)
    pid = h.qemu_pid(domain)
    if not pid:
        raise LabError(f"no QEMU of domain {domain} on {host}", hint="is the guest running there? `labmig lab status`")
    os.kill(pid, signal.SIGKILL)
    return {"host": host, "killed": "qemu", "domain": domain, "pid": pid}


def fill_disk(lab, host: str = "lab2") -> dict:
    h = lab.host(host)
    target = h.local_image_dir_outside / FILLER
    st = os.statvfs(h.local_image_dir_outside)
    left = st.f_bavail * st.f_frsize
    chunk = b"\0" * (1 << 20)
    written = 0
    with open(target, "ab") as f:
        try:
            while True:
                written += f.write(chunk)
                f.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return {"host": host, "filled": str(target), "bytes": written, "free_before": left}


def unfill_disk(lab, host: str = "lab2") -> dict:
    h = lab.host(host)
    target = h.local_image_dir_outside / FILLER
    existed = target.exists()
    target.unlink(missing_ok=True)
    return {"host": host, "removed": str(target) if existed else None}


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("link-cut", "cut the inter-host link (both ends down)", link_cut),
    Fault("link-restore", "bring the inter-host link back up", link_restore),
    Fault("link-slow", "limit the link to RATE bytes/s (token bucket); None lifts the limit", link_slow),
    Fault("kill-libvirtd", "SIGKILL libvirtd on HOST (its guests keep running)", kill_libvirtd),
    Fault("kill-qemu", "SIGKILL the QEMU of DOMAIN on HOST", kill_qemu),
    Fault("fill-disk", "fill HOST's local image directory to the last byte", fill_disk),
    Fault("unfill-disk", "remove the filler from HOST's local image directory", unfill_disk),
)}


def inject(lab, name: str, **kwargs) -> dict:
    """Run fault ``name`` on ``lab`` (a LocalLab) with its keyword arguments."""
    fault = FAULTS.get(name)
    if fault is None:
        raise InvalidInput(f"unknown fault {name!r}", hint=f"known faults: {', '.join(FAULTS)}")
    unknown = set(kwargs) - set(fault.params)
    if unknown:
        raise InvalidInput(f"fault {name} takes no {', '.join(sorted(unknown))}",
                           hint=f"it takes: {', '.join(fault.params) or 'nothing'}")
    lab.require_up()
    return fault.fn(lab, **kwargs)
