"""The client-seen interruption: a client of the guest probes it over the network all along.

    probe_for(vm, host)  the local lab's client probe for a lab guest, or None elsewhere

The probe itself belongs to the lab (it runs in the lab's client namespace);
this module only adapts it to LiveMigration's InterruptionProbe protocol:
``start()``, then ``stop()`` → the longest gap in answers, in seconds.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def probe_for(vm: str, host: str) -> Any | None:
    try:
        from .. import lab
    except ImportError:
        return None
    factory = getattr(lab, "client_probe", None)
    if factory is None:
        return None
    try:
        return factory(vm)
    except Exception as exc:  # not a lab guest, or the lab is down: no probe, say so
        log.info("no client probe for %s: %s", vm, exc)
        return None
