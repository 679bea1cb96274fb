"""The client-seen interruption: a client of the guest probes it over the network all along.

    PingProbe        sends numbered pings every ``interval`` from a socket (in the lab, one
                     opened inside the client namespace) and records when answers come back;
                     ``stop()`` → the longest stretch without an answer, in seconds
    probe_for(vm)    the lab's own probe for a lab guest if it offers one, else a PingProbe
                     on the guest's UDP echo service; None for VMs outside the lab

The gap is measured between answers the client actually received, so it includes
the pause QEMU reports, the time the network needs to learn the guest's new port,
and up to one probe interval of resolution.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)


class PingProbe:
    """Numbered request/answer pings over UDP; thread-based, bounded by ``stop()``."""

    def __init__(self, make_socket: Callable[[], socket.socket], address: tuple[str, int],
                 interval: float = 0.02, request: str = "PING {n}", answer_prefix: str = "PONG") -> None:
        self.make_socket = make_socket
        self.address = address
        self.interval = interval
        self.request = request
        self.answer_prefix = answer_prefix
        self.answers: list[float] = []
        self.sent = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sock: socket.socket | None = None
        self._t0 = 0.0

    def start(self) -> None:
        self._sock = self.make_socket()
        self._sock.settimeout(0.2)
        self._t0 = time.monotonic()
        self._stop.clear()
        self._threads = [threading.Thread(target=self._send, name="probe-send", daemon=True),
                         threading.Thread(target=self._receive, name="probe-recv", daemon=True)]
        for t in self._threads:
            t.start()

    def _send(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            n += 1
            try:
                self._sock.sendto(self.request.format(n=n).encode(), self.address)
                self.sent += 1
            except OSError:
                pass  # the network may be down: that is what we measure
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self._sock.recvfrom(256)
            except (socket.timeout, OSError):
                continue
            if data.decode(errors="replace").startswith(self.answer_prefix):
                self.answers.append(time.monotonic() - self._t0)

    def stop(self) -> float | None:
        """Stop probing; the longest gap between answers (None if no answer ever came)."""
        self._stop.set()
        for t in self._threads:
            t.join(2.0)
        if self._sock is not None:
            self._sock.close()
        return self.longest_gap()

    def longest_gap(self) -> float | None:
        if len(self.answers) < 2:
            return None
        times = sorted(self.answers)
        return max(b - a for a, b in zip(times, times[1:]))

    def gaps(self, threshold: float) -> list[tuple[float, float]]:
        """(start, length) of every gap longer than ``threshold`` seconds."""
        times = sorted(self.answers)
        return [(a, b - a) for a, b in zip(times, times[1:]) if b - a > threshold]


def probe_for(vm: str, host: str | None = None, lab: str | None = None) -> Any | None:
    """A client probe for a lab guest, or None when ``vm`` is not one (or no lab is up)."""
    try:
        from ..lab import plan as lab_plan
        from ..lab.guest import netns_socket
    except ImportError:
        return None
    try:
        from .. import lab as lab_pkg
        factory = getattr(lab_pkg, "client_probe", None)
        if factory is not None:
            return factory(vm)
        address = _lab_guest_address(vm, lab)
        if address is None:
            return None
        plan = lab_plan.make_plan(lab)
        netns = f"/run/netns/{plan.client_netns}"
        from pathlib import Path

        return PingProbe(lambda: netns_socket(Path(netns)), (address, lab_plan.GUEST_UDP_PORT))
    except Exception as exc:  # not a lab guest, or the lab is down: no probe, and say so
        log.info("no client probe for %s: %s", vm, exc)
        return None


def _lab_guest_address(vm: str, lab: str | None) -> str | None:
    """The guest's address from its kernel command line (labmig.ip=ADDR/PREFIX), via the lab's hosts."""
    import re

    from ..hosts import lab_hosts

    for host in lab_hosts(lab):
        try:
            dom = host.domain(vm)
        except Exception:
            continue
        if dom is None:
            continue
        match = re.search(r"labmig\.ip=([0-9.]+)", dom.XMLDesc(0))
        host.close()
        if match:
            return match.group(1)
    return None
