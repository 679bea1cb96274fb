"""A time limit around every libvirt call, so a dead daemon cannot hang a migration.

    Watchdog       runs a call in a helper thread and gives up after ``timeout`` seconds
    HostUnresponsive  the error raised then (a LabmigError with a hint)
    event_loop()   starts, once per process, the libvirt event loop thread that keepalive
                   probes and domain events (iteration, job completed) need

A call that times out keeps running in its daemon thread (libvirt offers no way
to cancel it); the caller moves on, and the connection is treated as lost. The
thread is a daemon so that a call stuck for good cannot keep the process from
exiting (a ThreadPoolExecutor's workers are joined at exit: a `labmig migrate`
stopped by Ctrl-C then hung as long as the stuck call did).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, TypeVar

from .errors import LabmigError

log = logging.getLogger(__name__)
T = TypeVar("T")

_loop_lock = threading.Lock()
_loop_started = False


class HostUnresponsive(LabmigError):
    """A libvirt call did not answer in time."""


def event_loop() -> None:
    """Register libvirt's default event implementation and run it in a daemon thread.

    Must happen before the first connection is opened; later calls do nothing.
    """
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        import libvirt

        libvirt.virEventRegisterDefaultImpl()
        # libvirt prints every error to stderr by default; labmig reports them itself.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # keep the loop alive whatever a callback does
                    log.exception("libvirt event loop iteration failed")

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


class Watchdog:
    """Runs ``fn(*args)`` with a deadline. One helper thread per call, daemonic."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout

    def call(self, what: str, fn: Callable[..., T], *args: Any,
             timeout: float | None = None, **kwargs: Any) -> T:
        limit = self.timeout if timeout is None else timeout
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller below
                outcome["error"] = exc

        helper = threading.Thread(target=run, name=f"libvirt-call: {what}", daemon=True)
        helper.start()
        helper.join(limit)
        if helper.is_alive():
            log.warning("%s did not answer within %.1f s", what, limit)
            raise HostUnresponsive(
                f"{what} did not answer within {limit:g} s",
                "the libvirt daemon may be dead or the link cut; check it (labmig status) and retry",
            )
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]
