"""The client-seen interruption: a client of the guest probes it over the network all along.

    LabClientProbe   adapts the local lab's client probe (pings from the lab's client
                     namespace) to LiveMigration's protocol: start(), stop() → longest gap
    probe_for(vm)    a LabClientProbe for a lab guest, or None for VMs outside the lab

The gap is measured between answers the client actually received, so it holds
the pause QEMU reports, the time the network needs to learn the guest's new
port, and up to one probe interval of resolution.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class LabClientProbe:
    def __init__(self, guest: Any, interval: float = 0.02) -> None:
        self.guest = guest          # a labmig.lab.LabGuest
        self.interval = interval
        self.report: Any = None     # the lab's ProbeReport once stopped
        self._probe: Any = None

    def start(self) -> None:
        self._probe = self.guest.start_probe(interval=self.interval)

    def stop(self) -> float | None:
        if self._probe is None:
            return None
        self.report, self._probe = self._probe.stop(), None
        return self.report.max_gap if self.report.answered else None


def probe_for(vm: str, lab: str | None = None, interval: float = 0.02) -> LabClientProbe | None:
    """A client probe for lab guest ``vm``; None when the lab is not up or ``vm`` is not its guest."""
    try:
        from ..lab import LocalLab
    except ImportError:
        return None
    try:
        local = LocalLab(lab)
        if not local.is_up():
            return None
        return LabClientProbe(local.guest(vm), interval)
    except Exception as exc:  # not a lab guest, or the lab is half up: no probe, and say so
        log.info("no client probe for %s: %s", vm, exc)
        return None
