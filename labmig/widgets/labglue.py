"""The panel's parameters handed to the real backends: the local lab (labmig.lab) and
live / cold migration over libvirt (labmig.live, labmig.cold).

    lab_status()       (up?, words): is the local two-host lab ($LABMIG_LAB) running here
    prepare()          the panel's VM on the lab: created if missing (its memory, working set,
                       dirty rate from the form), else set to the form's working set and dirty
                       rate; source = where it runs now, destination = the other host
    measured_params()  the parameters as measured: the guest's own dirty counter over a second
    run()              one real migration of ``params.to_spec()`` through labmig.backends (live
                       or cold), its timeline fed to ``on_point``; Abort aborts the libvirt job
                       (live) and the VM stays on the source. On the local lab the lab link is
                       shaped to the spec's link rate for the run; between other hosts the
                       link rate is only declared (the prediction uses it)
"""
from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from typing import Any, Callable

from ..backends import get_backend
from ..errors import InvalidInput, LabError
from ..model import MigrationResult, TimelinePoint
from ..units import format_rate, parse_rate, parse_size

log = logging.getLogger(__name__)

GUEST_INDEX_BASE = 100    # panel guests get addresses 10.78.0.(110..209) on the lab's bridge
PAGE = 4096               # the lab guest counts dirtied 4 KiB pages
COLD_SHUTDOWN_TIMEOUT = 10.0  # seconds
# What fits a TCG guest on one machine; the panel starts from these on the lab. The cap
# keeps a migration slow enough to watch (and to abort) while a TCG guest dirties 4 MiB/s.
LAB_DEFAULTS = {"memory": "256MiB", "working_set": "64MiB", "dirty_rate": "4MiB/s",
                "link_rate": "1Gbit/s", "max_bandwidth": "32MiB/s"}


def _lab():
    from ..lab import LocalLab

    return LocalLab()


def lab_status() -> tuple[bool, str]:
    try:
        from ..lab import LocalLab  # noqa: F401
    except ImportError:
        return False, "this labmig has no local lab support"
    if os.geteuid() != 0:
        return False, "the local lab needs root"
    try:
        lab = _lab()
        if lab.is_up():
            return True, f"lab {lab.name!r} is up (hosts lab1, lab2; real QEMU under libvirt)"
        return False, f"lab {lab.name!r} is not up"
    except Exception as exc:  # a half-made lab must not break the notebook: fall back
        log.info("lab status unknown: %s", exc)
        return False, f"the lab's state is unknown ({exc})"


def _guest(lab: Any, params: Any) -> Any:
    from ..lab import GuestSpec

    try:
        return lab.guest(params.vm)
    except InvalidInput:
        pass
    index = GUEST_INDEX_BASE + zlib.crc32(params.vm.encode()) % 100  # one address per guest name
    spec = GuestSpec(name=params.vm, index=index, memory=parse_size(params.memory),
                     wss=parse_size(params.working_set), dirty_rate=int(parse_rate(params.dirty_rate)),
                     disk="shared" if params.shared_storage else "local")
    spec.validate()
    host = params.source if params.source in ("lab1", "lab2") else "lab1"
    log.info("creating lab guest %s on %s", params.vm, host)
    return lab.create_guest(spec, host=host)


def prepare(params: Any) -> Any:
    up, why = lab_status()
    if not up:
        raise LabError(f"the local lab cannot run this migration: {why}",
                       "bring it up with `labmig lab up` (as root), or choose the simulator")
    lab = _lab()
    guest = _guest(lab, params)
    source = guest.running_on()
    if source is None:
        raise LabError(f"{params.vm} is not running on exactly one lab host ({guest.where()})",
                       "run `labmig recover` or `labmig status`, then try again")
    guest.set_working_set(parse_size(params.working_set))
    guest.set_dirty_rate(int(parse_rate(params.dirty_rate)))
    destination = lab.other(source).name
    return params.replace(source=source, destination=destination)


def measured_params(params: Any, seconds: float = 1.0) -> Any:
    """``params`` with the dirty rate the guest really achieves (QEMU under TCG is slow)."""
    guest = _lab().guest(params.vm)
    first, t0 = guest.stat(), time.monotonic()
    time.sleep(seconds)
    second, t1 = guest.stat(), time.monotonic()
    rate = (int(second["dirtied"]) - int(first["dirtied"])) * PAGE / (t1 - t0)
    log.info("guest %s dirties %s (asked %s)", params.vm, format_rate(rate), params.dirty_rate)
    return params.replace(dirty_rate=f"{max(rate, 0.0):.0f}B/s")


def run(params: Any, on_point: Callable[[TimelinePoint], None], abort: threading.Event) -> MigrationResult:
    """One real migration (live or cold) of the panel's spec, on the lab or between two URIs."""
    # The lab guest ignores ACPI power-off: a cold run gets a short graceful deadline, then
    # it is forced off; the panel confirms a finished cold migration itself.
    run_options = {"auto_confirm": True, "shutdown_timeout": COLD_SHUTDOWN_TIMEOUT} if params.kind == "cold" else {}
    spec = params.to_spec(**run_options)
    return get_backend(spec.kind).run(spec, on_point=on_point, abort=abort)
