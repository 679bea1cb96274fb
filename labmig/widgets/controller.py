"""The controller behind the migration widgets: parameters in, runs out, no ipywidgets here.

    MigrationParams      what the panel edits (defined in labmig.widgets.params, re-exported here)
    Run                  one migration in a background thread: timeline so far, phase in words,
                         result or error, ``abort()`` and ``wait()``
    MigrationController  holds the parameters, starts runs on a backend (labmig.widgets.backends),
                         predicts each run with the simulator, tells observers (the views) about
                         every step, and keeps the history the comparison view shows

Observers are plain callables ``observer(event, run)`` with event one of "start", "point",
"done"; they are called from the run's thread, so a view must only set widget values there.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from ..errors import InvalidInput, LabmigError
from ..model import MigrationResult, Outcome, TimelinePoint
from ..units import format_duration, format_rate, format_size
from .backends import get_backend
from .params import KINDS, MigrationParams

__all__ = ["KINDS", "MigrationParams", "Run", "MigrationController", "describe_point", "outcome_words"]

log = logging.getLogger(__name__)

Observer = Callable[[str, "Run"], None]


class Run:
    """One migration running in a background thread. Read it from any thread."""

    def __init__(self, params: MigrationParams, backend: Any, observers: list[Observer],
                 prediction: MigrationResult | None = None) -> None:
        self.params = params
        self.backend = backend
        self.prediction = prediction
        self.points: list[TimelinePoint] = []
        self.result: MigrationResult | None = None
        self.error: LabmigError | None = None
        self.started = time.monotonic()
        self._observers = observers
        self._abort = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"labmig-run-{params.vm}", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "Run":
        self._notify("start")
        self._thread.start()
        return self

    def abort(self) -> None:
        """Ask the backend to stop; the run ends with the VM on the source (see ``result``)."""
        log.info("abort requested for %s", self.params.vm)
        self._abort.set()

    @property
    def abort_requested(self) -> bool:
        return self._abort.is_set()

    def wait(self, timeout: float | None = None) -> MigrationResult:
        """Block until the run ends; return its result or raise its error."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"migration of {self.params.vm} still running after {timeout} s")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def wait_points(self, count: int, timeout: float = 300.0) -> bool:
        """Wait until ``count`` timeline points arrived (True) or the run ended first (False)."""
        deadline = time.monotonic() + timeout
        while len(self.points) < count:
            if not self.running or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    @property
    def running(self) -> bool:
        return self.result is None and self.error is None

    # -- what the views read ----------------------------------------------------------------
    @property
    def phase_text(self) -> str:
        if self.error is not None:
            return f"failed: {self.error.message}"
        if self.result is not None:
            return self.result.message or str(self.result.outcome)
        if self._abort.is_set():
            return "aborting: waiting for the VM to be back on the source"
        if not self.points:
            return "starting"
        return describe_point(self.points[-1], self.params.kind)

    @property
    def progress(self) -> float:
        """0..1: memory (or disk) already sent out of what there is to send."""
        if self.result is not None:
            return 1.0
        if not self.points:
            return 0.0
        last = self.points[-1]
        total = last.bytes_sent_total + last.remaining_bytes
        return min(1.0, last.bytes_sent_total / total) if total else 0.0

    # -- the thread --------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self.result = self.backend.run(self.params, self._on_point, self._abort)
        except LabmigError as exc:
            log.warning("migration of %s failed: %s", self.params.vm, exc)
            self.error = exc
        except Exception as exc:  # a view must show every failure, not a silent dead thread
            log.exception("migration of %s crashed", self.params.vm)
            self.error = LabmigError(f"{type(exc).__name__}: {exc}", "see the kernel log for the traceback")
        finally:
            # Views first, so that wait() returns once they show the outcome.
            self._notify("done")
            self._done.set()

    def _on_point(self, point: TimelinePoint) -> None:
        self.points.append(point)
        self._notify("point")

    def _notify(self, event: str) -> None:
        for observer in list(self._observers):
            try:
                observer(event, self)
            except Exception:
                log.exception("observer %r failed on %s", observer, event)


class MigrationController:
    """Holds the parameters; starts, aborts and remembers runs. The widgets are views of this."""

    def __init__(self, params: MigrationParams | None = None, **changes: Any) -> None:
        self.params = (params or MigrationParams()).replace(**changes)
        self.runs: list[Run] = []
        self._observers: list[Observer] = []

    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def set(self, **changes: Any) -> MigrationParams:
        self.params = self.params.replace(**changes)
        return self.params

    @property
    def current(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    @property
    def results(self) -> list[MigrationResult]:
        """Finished runs' results, oldest first (the comparison view's rows)."""
        return [r.result for r in self.runs if r.result is not None]

    def predict(self, params: MigrationParams | None = None) -> MigrationResult | None:
        """The simulator's figures for these parameters (on the lab: the guest's dirty rate as measured)."""
        params = params or self.params
        try:
            return get_backend(params.backend).predict(params)
        except LabmigError as exc:
            log.info("no prediction: %s", exc)
            return None

    def start(self, **changes: Any) -> Run:
        """Start a run with the current parameters (plus ``changes``) and return it at once."""
        if self.current is not None and self.current.running:
            raise InvalidInput(f"a migration of {self.current.params.vm} is still running",
                               "wait for it or press Abort first")
        params = self.params.replace(**changes) if changes else self.params
        params.validate()
        backend = get_backend(params.backend)
        params = backend.prepare(params)
        prediction = self.predict(params)
        run = Run(params, backend, self._observers, prediction)
        self.runs.append(run)
        return run.start()

    def migrate(self, timeout: float | None = None, **changes: Any) -> MigrationResult:
        """Start a run and wait for it: what a notebook cell calls."""
        return self.start(**changes).wait(timeout)

    def abort(self) -> None:
        if self.current is not None and self.current.running:
            self.current.abort()


def describe_point(point: TimelinePoint, kind: str = "live") -> str:
    """The current phase in words, for a student watching the run."""
    left = format_size(point.remaining_bytes)
    if point.phase == "precopy":
        text = (f"pre-copy pass {point.iteration}: the VM runs while its memory is copied; "
                f"{left} left, guest dirtying {format_rate(point.dirty_rate)}, "
                f"link sending {format_rate(point.bandwidth)}")
        if point.throttle_pct:
            text += f", vCPUs throttled {point.throttle_pct:.0f} %"
        if point.expected_downtime is not None:
            text += f", expected downtime {format_duration(point.expected_downtime)}"
        return text
    if point.phase == "stop-and-copy":
        return f"stop-and-copy: the VM is paused while the last {left} are sent (this is the downtime)"
    if point.phase == "postcopy":
        return f"post-copy: the VM already runs on the destination and pulls the {left} still missing"
    if point.phase == "disk":
        what = "disk copy (VM off)" if kind == "cold" else "block migration of the local disk"
        return f"{what}: {left} left at {format_rate(point.bandwidth)}"
    if point.phase == "shutdown":
        return "shutdown: the guest powers off on the source"
    if point.phase == "boot":
        return "boot: the guest starts on the destination"
    return f"{point.phase}: {left} left"


def outcome_words(result: MigrationResult) -> str:
    """Where the VM is after the run, in words: as both hosts said after a real run, else by its outcome."""
    placement = result.extra.get("placement")
    if placement:
        return placement["words"] + (f" (CHECK: {placement['problem']})" if placement.get("problem") else "")
    if result.outcome == Outcome.COMPLETED:
        return f"the VM runs on {result.destination or 'the destination'}"
    if result.outcome in (Outcome.ABORTED, Outcome.ROLLED_BACK, Outcome.REVERTED, Outcome.DID_NOT_CONVERGE):
        return f"the VM runs on {result.source or 'the source'}"
    return "see the message"
