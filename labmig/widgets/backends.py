"""Where a run from the panel actually happens: thin adapters over labmig.backends.

Each turns the panel's parameters into one labmig.spec.MigrationSpec
(``MigrationParams.to_spec()``) and hands it to labmig.backends (the simulator, or
live / cold over libvirt); what these add is the panel's side: is this place available,
prepare the lab guest, a prediction beside the run, playback of a simulated timeline.

    Backend            the protocol: ``available()``, ``prepare(params)``, ``run(params, on_point,
                       abort)`` -> MigrationResult, ``predict(params)``
    SimulatorBackend   runs labmig's simulator (virtual time), then plays its timeline back over
                       ``params.playback`` wall seconds so the views move as in a real run; Abort
                       cuts the run at that moment, as an abort before switch-over would
    LocalLabBackend    the two-host lab on this machine (hosts "lab1"/"lab2"): real libvirt
    HostsBackend       the same orchestration between two hosts given by libvirt URI
    BACKENDS           name -> class; the panel's Backend choices come from here
    resolve_backend    "auto": the local lab when it is up, else the simulator, saying which

Every backend returns a :class:`labmig.model.MigrationResult` and feeds each
:class:`~labmig.model.TimelinePoint` to ``on_point`` as it happens.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import threading
import time
from typing import Callable, Protocol

from ..errors import InvalidInput, LabError, LabmigError
from ..model import Event, MigrationResult, Outcome, TimelinePoint
from ..units import format_duration
from .params import MigrationParams

log = logging.getLogger(__name__)

PointCallback = Callable[[TimelinePoint], None]


class Backend(Protocol):
    name: str

    def available(self) -> tuple[bool, str]: ...
    def prepare(self, params: MigrationParams) -> MigrationParams: ...
    def run(self, params: MigrationParams, on_point: PointCallback,
            abort: threading.Event) -> MigrationResult: ...
    def predict(self, params: MigrationParams) -> MigrationResult: ...


def _optional_module(name: str):
    """Import a labmig part that may not be installed on this machine (None if absent)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        log.debug("%s not importable: %s", name, exc)
        return None


def play_back(result: MigrationResult, on_point: PointCallback, abort: threading.Event,
              wall_seconds: float) -> MigrationResult:
    """Feed ``result``'s timeline to ``on_point``, spread over ``wall_seconds``.

    If ``abort`` is set before the switch-over (the first point past pre-copy / disk copy of a
    cold run), return the run cut there: outcome ABORTED, the VM still on the source, the bytes
    sent so far wasted. After the switch-over an abort is too late, as with QEMU.
    """
    points = result.timeline
    end = points[-1].t if points else result.total_time
    scale = wall_seconds / end if end > 0 and wall_seconds > 0 else 0.0
    start = time.monotonic()
    for index, point in enumerate(points):
        if scale:
            delay = start + point.t * scale - time.monotonic()
            if delay > 0:
                abort.wait(delay)
        if abort.is_set() and not _past_switchover(result, points[:index]):
            return _cut(result, points[:index])
        on_point(point)
    return result


def _past_switchover(result: MigrationResult, sent: list[TimelinePoint]) -> bool:
    if result.kind == "cold":
        return any(p.phase == "boot" for p in sent)
    return any(p.phase in ("stop-and-copy", "postcopy") for p in sent)


def _cut(result: MigrationResult, sent: list[TimelinePoint]) -> MigrationResult:
    t = sent[-1].t if sent else 0.0
    wire = sent[-1].bytes_sent_total if sent else 0
    phase = sent[-1].phase if sent else ("precopy" if result.kind == "live" else "shutdown")
    if result.kind == "live":
        downtime = 0.0
        words = (f"aborted during pre-copy after {format_duration(t)}: the VM kept running on "
                 f"{result.source or 'the source'}; the memory sent so far is thrown away")
    else:
        downtime = t
        words = (f"aborted during the {phase} step after {format_duration(t)}: the copy on the "
                 f"destination is dropped and the VM boots again on {result.source or 'the source'}")
    return dataclasses.replace(
        result, outcome=Outcome.ABORTED, total_time=t, downtime=downtime,
        bytes_by_phase={phase: wire} if wire else {}, iterations=max((p.iteration for p in sent), default=0),
        timeline=list(sent), events=[e for e in result.events if e.t <= t] + [Event(t, "abort", "aborted from the panel")],
        message=words,
    )


class SimulatorBackend:
    """labmig's simulator behind the panel: any memory size and link, in virtual time."""

    name = "simulator"

    def available(self) -> tuple[bool, str]:
        if _optional_module("labmig.sim") is None:
            return False, "the simulator (labmig.sim) is not installed"
        return True, "the simulator: virtual time, any VM size and link"

    def prepare(self, params: MigrationParams) -> MigrationParams:
        return params

    def predict(self, params: MigrationParams) -> MigrationResult:
        from . import simplan

        return simplan.simulate(params)

    def run(self, params: MigrationParams, on_point: PointCallback,
            abort: threading.Event) -> MigrationResult:
        result = self.predict(params)
        return play_back(result, on_point, abort, params.playback)


class LocalLabBackend:
    """The two-host lab on this machine: a real QEMU guest migrated between two libvirtds."""

    name = "local lab"

    def available(self) -> tuple[bool, str]:
        from . import labglue

        return labglue.lab_status()

    def prepare(self, params: MigrationParams) -> MigrationParams:
        from . import labglue

        return labglue.prepare(params)

    def predict(self, params: MigrationParams) -> MigrationResult:
        """The simulator on the same spec as the run, with the dirty rate the guest is measured to achieve."""
        from . import labglue

        return SimulatorBackend().predict(labglue.measured_params(params))

    def run(self, params: MigrationParams, on_point: PointCallback,
            abort: threading.Event) -> MigrationResult:
        from . import labglue

        return labglue.run(params, on_point, abort)


class HostsBackend(LocalLabBackend):
    """Two libvirt hosts given by URI (e.g. the Vagrant pair): source and destination are URIs."""

    name = "hosts"

    def available(self) -> tuple[bool, str]:
        if _optional_module("labmig.live") is None:
            return False, "live migration over libvirt (labmig.live) is not installed"
        return True, "two libvirt hosts by URI"

    def prepare(self, params: MigrationParams) -> MigrationParams:
        for end in (params.source, params.destination):
            if "://" not in end and not end.startswith("qemu"):
                raise InvalidInput(f"{end!r} is not a libvirt URI",
                                   "write e.g. qemu+ssh://host1/system, or choose the local lab")
        return params

    def predict(self, params: MigrationParams) -> MigrationResult:
        return SimulatorBackend().predict(params)


BACKENDS: dict[str, type] = {
    "simulator": SimulatorBackend,
    "local lab": LocalLabBackend,
    "hosts": HostsBackend,
}


def get_backend(name: str) -> Backend:
    if name == "auto":
        name, _ = resolve_backend()
    try:
        return BACKENDS[name]()
    except KeyError:
        raise InvalidInput(f"unknown backend {name!r}", f"choose one of: {', '.join(BACKENDS)} or auto") from None


def resolve_backend() -> tuple[str, str]:
    """("local lab", why) when the lab is up, else ("simulator", why) — the notebooks' fallback."""
    try:
        up, why = LocalLabBackend().available()
    except LabmigError as exc:
        up, why = False, exc.message
    if up:
        return "local lab", f"using the local lab: {why}"
    return "simulator", f"the local lab is not up ({why}); using the simulator instead"


def require_available(name: str) -> None:
    ok, why = get_backend(name).available()
    if not ok:
        raise LabError(f"backend {name!r} cannot run here: {why}",
                       "bring the lab up with `labmig lab up`, or choose the simulator")
