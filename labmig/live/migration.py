"""``LiveMigration``: one real live migration, watched, steered and always cleaned up.

    LiveMigration   context manager: ``__enter__`` takes the VM's lock (labmig.vmlock),
                    connects and runs the pre-checks, ``run()`` migrates and returns a
                    MigrationResult, ``__exit__`` aborts a job still running, rolls back
                    and releases the lock. Thread-safe ``abort()``,
                    ``set_bandwidth()``, ``set_max_downtime()``, ``start_postcopy()``
                    for callbacks, widgets and signal handlers
    InterruptionProbe  what a client-side probe must offer: start(), stop() → longest gap
    Rollback        puts the VM back on the source and clears the destination, then
                    checks both and says what it found

How it works: ``migrateToURI3`` (peer-to-peer, as Nova) blocks in a worker
thread; the calling thread polls ``jobStats`` every ``poll_interval``, turns each
poll into a TimelinePoint (callbacks get it at once), and hands it to the policy,
which may raise the downtime, switch to post-copy, pause or abort. Iteration and
lifecycle events from libvirt's event loop become Events. A migration that makes
no progress for ``stall_timeout`` (a cut link) is aborted.

Bytes by phase are attributed from successive samples: what moved between two
polls counts for the phase the second poll saw. Of what moved after the last
poll, at most QEMU's final rate x its downtime went while the guest was paused
(stop-and-copy); the rest finished the pre-copy pass (or was post-copy).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Callable, Protocol

from ..errors import InvalidInput, LabmigError, MigrationFailed
from ..hosts import Host, HostUnreachable, resolve_host
from ..model import Event, MigrationResult, Outcome, TimelinePoint
from ..units import format_duration, format_rate
from ..vmlock import vm_lock
from ..watchdog import HostUnresponsive
from .endings import clean_source_disks, end_interrupted_postcopy
from .plan import LivePlan, bandwidth_mib
from .policies import JobSample, Policy, make_policy
from .prechecks import PrecheckReport, run_prechecks
from .rollback import Rollback, forget_created, precreate_disks, record_created

log = logging.getLogger(__name__)

PointCallback = Callable[[TimelinePoint], None]
EventCallback = Callable[[Event], None]


class InterruptionProbe(Protocol):
    """A client of the guest over its network: ``stop()`` returns the longest gap seen (s)."""

    def start(self) -> None: ...
    def stop(self) -> float | None: ...


class LiveMigration:
    """Make a LivePlan real. Use as ``with LiveMigration(plan) as mig: result = mig.run()``."""

    def __init__(self, plan: LivePlan, source: Host | None = None, destination: Host | None = None,
                 on_point: PointCallback | list[PointCallback] | None = None,
                 on_event: EventCallback | list[EventCallback] | None = None,
                 probe: InterruptionProbe | None = None,
                 stall_timeout: float = 15.0, rollback_wait: float = 45.0, postcopy_wait: float = 120.0) -> None:
        self.plan = plan
        self.source = source or resolve_host(plan.source)
        self.destination = destination or resolve_host(plan.destination)
        self.point_callbacks = _as_list(on_point)
        self.event_callbacks = _as_list(on_event)
        self.probe = probe
        self.stall_timeout = stall_timeout
        self.rollback_wait = rollback_wait
        self.postcopy_wait = postcopy_wait
        self.report: PrecheckReport | None = None
        self.policy: Policy | None = None
        self.result: MigrationResult | None = None
        self.events: list[Event] = []
        self.timeline: list[TimelinePoint] = []
        self._dom: Any = None
        self._t0 = 0.0
        self._lock = threading.Lock()
        self._abort_reason: str | None = None
        self._abort_by_user = False
        self._postcopy = False
        self._paused_by_us = False
        self._suspended_for_switchover = False
        self._running = False
        self._callback_ids: list[int] = []
        self._event_conn: Any = None
        self._created_volumes: list[Any] = []
        self._completed_stats: dict | None = None
        self._sample_bytes: list[tuple[int, int]] = []
        self._final_downtime = 0.0
        self._vm_lock = contextlib.ExitStack()

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> "LiveMigration":
        # The VM's lock (labmig.vmlock), from the pre-checks until the rollback in __exit__ is done.
        self._vm_lock.enter_context(vm_lock(self.plan.vm))
        try:
            self.prepare()
        except BaseException:
            self._vm_lock.close()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self._running:
                self.abort("leaving the migration context while it still ran")
        finally:
            try:
                self.close()
            finally:
                self._vm_lock.close()

    def prepare(self) -> PrecheckReport:
        """Connect and run every pre-check; raises PrecheckFailed before anything changes."""
        self.report = run_prechecks(self.plan, self.source, self.destination)
        self.report.raise_if_failed()
        guest = self.report.guest
        copied = [d.capacity for d in guest.disks if not d.shared] if guest and self.report.block_migration else []
        self.policy = make_policy(self.plan.options, self.report.data_bytes, copied)
        self._dom = self.source.domain(self.plan.vm)
        return self.report

    def close(self) -> None:
        conn = self._event_conn
        for cid in self._callback_ids:
            try:
                conn.domainEventDeregisterAny(cid)
            except Exception:  # the connection may be gone already
                pass
        self._callback_ids.clear()
        self.source.close()
        self.destination.close()

    # -- controls (any thread) ---------------------------------------------------

    def _t(self) -> float:
        return time.monotonic() - self._t0 if self._t0 else 0.0

    def note(self, kind: str, message: str) -> None:
        event = Event(round(self._t(), 3), kind, message)
        with self._lock:
            self.events.append(event)
        log.info("%s: %s", kind, message)
        for cb in self.event_callbacks:
            try:
                cb(event)
            except Exception:
                log.exception("event callback failed")

    def _job_call(self, what: str, fn: Callable[..., Any], *args: Any) -> bool:
        import libvirt

        try:
            self.source.call(what, fn, *args, timeout=10)
            return True
        except (libvirt.libvirtError, HostUnresponsive) as exc:
            log.warning("%s failed: %s", what, exc)
            return False

    def set_bandwidth(self, rate: float | str) -> None:
        from ..units import parse_rate

        value = parse_rate(rate)
        if value <= 0:
            raise InvalidInput("bandwidth must be positive", "e.g. 100MiB/s")
        if self._job_call("setting the bandwidth", self._dom.migrateSetMaxSpeed, bandwidth_mib(value), 0):
            self.note("bandwidth", f"bandwidth cap set to {format_rate(bandwidth_mib(value) * 2**20)}")

    def set_max_downtime(self, seconds: float) -> None:
        ms = max(1, int(round(seconds * 1000)))
        if self._job_call("setting max downtime", self._dom.migrateSetMaxDowntime, ms, 0):
            self.note("max-downtime", f"max downtime set to {ms} ms")

    def start_postcopy(self, reason: str = "post-copy requested") -> None:
        if self._postcopy:
            return
        if self._job_call("switching to post-copy", self._dom.migrateStartPostCopy, 0):
            self._postcopy = True
            self.note("postcopy", reason)

    def pause_guest(self, reason: str) -> None:
        if self._job_call("pausing the guest", self._dom.suspend):
            self._paused_by_us = True
            self.note("paused", reason)

    def abort(self, reason: str = "aborted by the user", by_user: bool = True) -> None:
        with self._lock:
            if self._abort_reason is None:
                self._abort_reason = reason
                self._abort_by_user = by_user
        self.note("abort", reason)
        if self._postcopy:
            self.note("abort", "already in post-copy: the destination runs the guest, the job cannot be undone")
            return
        if self._dom is not None:
            self._job_call("aborting the job", self._dom.abortJob)

    # -- the run -----------------------------------------------------------------

    def run(self, check: bool = False) -> MigrationResult:
        """Migrate; returns the result whatever happened. ``check=True`` raises MigrationFailed on failure.

        Holds the VM's lock for the run (re-entrant: ``with LiveMigration(...)`` took it already);
        another labmig process acting on the VM makes it raise VMBusy before anything changes.
        """
        with vm_lock(self.plan.vm):
            return self._run(check)

    def _run(self, check: bool) -> MigrationResult:
        if self.report is None:
            self.prepare()
        import libvirt

        plan, report = self.plan, self.report
        assert report is not None and self.policy is not None and report.guest is not None
        block = report.block_migration
        flags = plan.flags(libvirt, block)
        if getattr(self.policy, "needs_postcopy", False):
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if not block and report.shared_storage_proven:
            # libvirt only recognises network file systems as shared; our probe file
            # proved these disks are the same on both hosts, so vouch for them.
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        disks = [d.target for d in report.guest.disks if not d.shared] if block else None
        params = plan.params(libvirt, self.destination.migration_uri(), disks)
        self._t0 = time.monotonic()
        self._register_events()
        if self.probe is not None:
            self.probe.start()
        self.note("start", f"live migration of {plan.vm} from {self.source.name} to {self.destination.name} "
                  f"({'block migration of ' + ', '.join(disks or []) if block else 'shared storage'}, "
                  f"policy {self.policy.name})")
        outcome_error: BaseException | None = None
        worker_error: list[BaseException] = []
        try:
            if block:
                self._created_volumes = precreate_disks(self.destination, report.guest)
                record_created(plan.vm, self.destination, self._created_volumes)
            worker = threading.Thread(target=self._migrate, name="migrate", daemon=True,
                                      args=(flags, params, worker_error))
            self._running = True
            self.policy.start(self)
            worker.start()
            self._monitor(worker)
        except KeyboardInterrupt as exc:
            outcome_error = exc
            self.abort(f"interrupted ({str(exc) or 'Ctrl-C'})")
            self._wait_worker(worker_error)
        except LabmigError as exc:
            outcome_error = exc
            self.abort(f"stopping after an error: {exc.message}", by_user=False)
            self._wait_worker(worker_error)
        finally:
            self._running = False
            client_gap = self.probe.stop() if self.probe is not None else None
        result = self._finish(worker_error, outcome_error, client_gap, block)
        forget_created(plan.vm)     # the disks are the VM's now, or the rollback removed them
        self.result = result
        if isinstance(outcome_error, KeyboardInterrupt):
            raise outcome_error
        if check and not result.completed:
            raise MigrationFailed(result.message, "see `labmig status`; the next attempt starts clean",
                                  rolled_back=result.extra.get("rolled_back", False))
        return result

    def _migrate(self, flags: int, params: dict, errors: list[BaseException]) -> None:
        try:
            self._dom.migrateToURI3(self.destination.peer_uri(), params, flags)
        except BaseException as exc:  # reported by the monitoring thread
            errors.append(exc)

    def _wait_worker(self, errors: list[BaseException], limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self._running_job():
            time.sleep(0.2)

    def _running_job(self) -> bool:
        import libvirt

        try:
            return self.source.call("reading the job", self._dom.jobInfo, timeout=5)[0] != libvirt.VIR_DOMAIN_JOB_NONE
        except (libvirt.libvirtError, LabmigError):
            return False

    def _monitor(self, worker: threading.Thread) -> None:
        import libvirt

        assert self.policy is not None  # made by the pre-checks, before the job starts
        opts = self.plan.options
        last_progress, last_bytes = time.monotonic(), -1
        prev: JobSample | None = None
        abort_sent_at: float | None = None
        stalled_since: float | None = None      # post-copy only: it is waited for, not aborted
        while worker.is_alive():
            worker.join(opts.poll_interval)
            if not worker.is_alive():
                break
            try:
                stats = self.source.call("reading job stats", self._dom.jobStats, 0, timeout=10)
            except libvirt.libvirtError as exc:
                log.debug("jobStats failed: %s", exc)
                continue
            except HostUnresponsive:
                if abort_sent_at is None:
                    self.abort("the source libvirt daemon stopped answering", by_user=False)
                    abort_sent_at = time.monotonic()
                continue
            sample = JobSample.from_stats(stats)
            if not sample.active:
                continue
            point = self._point(sample, prev)
            prev = sample
            self._sample_bytes.append((sample.memory_processed, sample.disk_processed))
            self._emit(point)
            moved = sample.memory_processed + sample.disk_processed
            if moved != last_bytes:
                if stalled_since is not None:
                    self.note("resumed", "data moves again")
                last_bytes, last_progress, stalled_since = moved, time.monotonic(), None
            elif time.monotonic() - last_progress > self.stall_timeout and self._abort_reason is None \
                    and not self._paused_by_us:
                if not self._postcopy:
                    self.abort(f"no data moved for {format_duration(self.stall_timeout)}: "
                               "the migration link looks cut or the destination stuck", by_user=False)
                elif stalled_since is None:
                    stalled_since = time.monotonic()
                    self.note("stalled", f"no data moved for {format_duration(self.stall_timeout)} in post-copy: "
                              f"the guest runs on {self.destination.name} and waits for its pages; nothing can "
                              f"roll it back, so labmig waits for the link (up to {self.postcopy_wait:.0f} s)")
                elif time.monotonic() - stalled_since > self.postcopy_wait:
                    self.note("watchdog", f"post-copy made no progress for {self.postcopy_wait:.0f} s more; "
                              "giving up waiting")
                    break
            if self._abort_reason is None:
                self.policy.step(self, sample)
            if self._abort_reason is not None:
                abort_sent_at = abort_sent_at or time.monotonic()
                if time.monotonic() - abort_sent_at > 30:
                    self.note("watchdog", "the job did not stop 30 s after the abort; giving up waiting")
                    break

    # -- samples -------------------------------------------------------------------

    def _phase(self, sample: JobSample) -> str:
        if self._postcopy:
            return "postcopy"
        if self._suspended_for_switchover or self._paused_by_us:
            return "stop-and-copy"
        if sample.disk_total and sample.disk_remaining and not sample.memory_processed:
            return "disk"
        return "precopy"

    def _point(self, sample: JobSample, prev: JobSample | None) -> TimelinePoint:
        page = 4096
        sent = sample.memory_processed - (prev.memory_processed if prev else 0)
        dt = sample.elapsed - (prev.elapsed if prev else 0.0)
        total = sample.memory_processed + sample.disk_processed
        prev_total = (prev.memory_processed + prev.disk_processed) if prev else 0
        phase = self._phase(sample)
        return TimelinePoint(
            t=round(self._t(), 3), phase=phase, iteration=sample.iteration,
            pages_sent=max(sent, 0) // page,
            pages_dirtied=int(sample.dirty_rate * max(dt, 0) / page),
            remaining_bytes=sample.disk_remaining if phase == "disk" else sample.memory_remaining,
            bytes_sent_total=total,
            bandwidth=(total - prev_total) / dt if prev and dt > 0 else sample.memory_bps,
            dirty_rate=sample.dirty_rate, throttle_pct=sample.throttle_pct,
            expected_downtime=sample.expected_downtime,
        )

    def _emit(self, point: TimelinePoint) -> None:
        self.timeline.append(point)
        for cb in self.point_callbacks:
            try:
                cb(point)
            except Exception:
                log.exception("timeline callback failed")

    # -- libvirt events ----------------------------------------------------------------

    def _register_events(self) -> None:
        import libvirt

        conn = self._event_conn = self.source.connect()

        def on_iteration(_c: Any, _d: Any, iteration: int, _o: Any) -> None:
            self.note("pass", f"pre-copy pass {iteration} starts")

        def on_lifecycle(_c: Any, _d: Any, event: int, detail: int, _o: Any) -> None:
            if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
                if detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED:
                    self._suspended_for_switchover = True
                    self.note("switchover", "source paused for the final stop-and-copy")
                elif detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY:
                    self.note("switchover", "source paused: the destination runs the guest (post-copy)")
            elif event == libvirt.VIR_DOMAIN_EVENT_RESUMED and self._suspended_for_switchover:
                self._suspended_for_switchover = False
                self.note("resumed", "source runs again")

        def on_job_completed(_c: Any, _d: Any, stats: dict, _o: Any) -> None:
            self._completed_stats = dict(stats)

        for event_id, cb in ((libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, on_iteration),
                             (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle),
                             (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, on_job_completed)):
            try:
                self._callback_ids.append(conn.domainEventRegisterAny(self._dom, event_id, cb, None))
            except libvirt.libvirtError as exc:
                log.debug("event %s not available: %s", event_id, exc)

    # -- the end ---------------------------------------------------------------------

    def _completed_job_stats(self) -> dict:
        """QEMU's own final figures: from the job-completed event, else the destination's copy."""
        import libvirt

        deadline = time.monotonic() + 2.0
        while self._completed_stats is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._completed_stats:
            return self._completed_stats
        for host in (self.destination, self.source):
            try:
                dom = host.domain(self.plan.vm)
                if dom is not None:
                    stats = host.call("reading final job stats", dom.jobStats,
                                      libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
                    if stats:
                        return stats
            except (libvirt.libvirtError, LabmigError):
                continue
        return {}

    def _finish(self, worker_error: list[BaseException], outcome_error: BaseException | None,
                client_gap: float | None, block: bool) -> MigrationResult:
        import libvirt

        wall = self._t()
        error = worker_error[0] if worker_error else outcome_error
        opts = self.plan.options
        result = MigrationResult(
            kind="live", strategy="hybrid" if getattr(self.policy, "needs_postcopy", False) and
            opts.strategy == "precopy" else opts.strategy, backend="libvirt", outcome=Outcome.COMPLETED,
            total_time=wall, downtime=0.0, vm=self.plan.vm, source=self.source.name,
            destination=self.destination.name,
            memory_bytes=self.report.guest.memory if self.report and self.report.guest else 0,
            client_interruption=client_gap, plan=self.plan.to_dict(),
        )
        result.extra["block_migration"] = block
        throttled = [p for p in self.timeline if p.throttle_pct > 0]
        result.max_throttle_pct = max((p.throttle_pct for p in self.timeline), default=0.0)
        result.throttle_time = len(throttled) * opts.poll_interval
        result.extra["policy"] = self.policy.name if self.policy else ""
        result.extra["prechecks"] = self.report.to_list() if self.report else []
        if error is None and self._abort_reason is None:
            stats = self._completed_job_stats()
            final = JobSample.from_stats(stats) if stats else None
            if self._paused_by_us:
                self._resume_on_destination()
            verdict = Rollback(self).verify_on_destination()
            result.outcome = Outcome.COMPLETED if verdict.ok else Outcome.FAILED
            if final is not None:
                result.downtime = self._final_downtime = float(stats.get("downtime", 0)) / 1000.0
                result.extra["qemu_total_time"] = final.elapsed
                result.extra["downtime_net"] = float(stats.get("downtime_net", 0)) / 1000.0 if "downtime_net" in stats else None
                result.extra["setup_time"] = float(stats.get("setup_time", 0)) / 1000.0
                result.iterations = final.iteration
                result.postcopy_faults = final.postcopy_requests
            result.bytes_by_phase = self._bytes_by_phase(final)
            self.note("done" if verdict.ok else "failed", verdict.message)
            result.message = self._summary(result, verdict.message)
            if verdict.ok and block:
                clean_source_disks(self, result)
        else:
            reason = self._abort_reason or _describe(error)
            if self._postcopy:
                end_interrupted_postcopy(self, result, reason)
            else:
                self.note("rollback", f"migration stopped: {reason}; rolling back")
                verdict = Rollback(self).run()
                result.extra["rolled_back"] = verdict.ok
                result.extra["destination_clean"] = verdict.destination_clean
                if verdict.runs_on:
                    result.extra["runs_on"] = verdict.runs_on     # kept on the destination, not rolled back
                aborted = (self._abort_reason is not None and self._abort_by_user) or \
                    (self._abort_reason is None and _libvirt_code(error) == libvirt.VIR_ERR_OPERATION_ABORTED)
                if not verdict.ok:
                    result.outcome = Outcome.FAILED
                elif self.policy and self.policy.finished_action == "abort":
                    result.outcome = Outcome.DID_NOT_CONVERGE
                elif aborted:
                    result.outcome = Outcome.ABORTED
                else:
                    result.outcome = Outcome.ROLLED_BACK
                result.message = f"{reason}. {verdict.message}"
            result.bytes_by_phase = self._bytes_by_phase(None)
            result.iterations = max((p.iteration for p in self.timeline), default=0)
        result.timeline = list(self.timeline)
        result.events = list(self.events)
        return result

    def _resume_on_destination(self) -> None:
        """Force-complete paused the guest; it arrives paused, so let it run again (Nova's unpause)."""
        import libvirt

        try:
            dom = self.destination.domain(self.plan.vm)
            if dom is not None and self.destination.call("reading the VM state", dom.state)[0] == \
                    libvirt.VIR_DOMAIN_PAUSED:
                self.destination.call("resuming the guest", dom.resume)
                self.note("resumed", f"guest resumed on {self.destination.name} after the forced completion")
        except (libvirt.libvirtError, LabmigError) as exc:
            log.warning("could not resume the guest on the destination: %s", exc)

    def _bytes_by_phase(self, final: JobSample | None) -> dict[str, int]:
        phases: dict[str, int] = {}
        prev_mem, disk = 0, 0
        for point, (mem, disk_now) in zip(self.timeline, self._sample_bytes, strict=False):
            phase = "precopy" if point.phase == "disk" else point.phase
            phases[phase] = phases.get(phase, 0) + max(mem - prev_mem, 0)
            prev_mem, disk = mem, max(disk, disk_now)
        if final is not None:
            tail = max(final.memory_processed - prev_mem, 0)
            if self._postcopy:
                phases["postcopy"] = phases.get("postcopy", 0) + tail
            else:
                # QEMU switches over once what is left fits in the downtime at the measured
                # rate, so the paused round moved at most rate x downtime; the rest of what
                # went after the last poll belongs to the pre-copy passes.
                paused = min(tail, int(final.memory_bps * max(self._final_downtime, 0.0)))
                phases["precopy"] = phases.get("precopy", 0) + tail - paused
                phases["stop-and-copy"] = phases.get("stop-and-copy", 0) + paused
            disk = max(disk, final.disk_processed)
        if disk:
            phases["disk"] = disk
        return {k: v for k, v in phases.items() if v}

    def _summary(self, result: MigrationResult, verdict: str) -> str:
        words = [f"{self.plan.vm} moved from {self.source.name} to {self.destination.name} in "
                 f"{format_duration(result.total_time)}, {result.iterations} pass(es), QEMU downtime "
                 f"{format_duration(result.downtime)}"]
        if result.client_interruption is not None:
            words.append(f"a client saw {format_duration(result.client_interruption)} without answers")
        if self._postcopy:
            words.append("finished in post-copy")
        if any(e.kind == "not-converging" for e in self.events):
            words.append("pre-copy stopped converging on the way")
        if result.max_throttle_pct:
            words.append(f"auto-converge slowed the guest's CPU by up to {result.max_throttle_pct:.0f} % "
                         "(a client waits longer on a throttled guest)")
        if self._paused_by_us:
            words.append("the guest was paused to force completion")
        return "; ".join(words) + f". {verdict}"


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "stopped"
    try:
        import libvirt

        if isinstance(error, libvirt.libvirtError):
            return f"libvirt said: {error.get_error_message()}"
    except ImportError:
        pass
    if isinstance(error, LabmigError):
        return error.message
    return f"{type(error).__name__}: {error}"


def _libvirt_code(error: BaseException | None) -> int | None:
    get = getattr(error, "get_error_code", None)
    return get() if get else None


def _as_list(cb: Any) -> list:
    if cb is None:
        return []
    return list(cb) if isinstance(cb, (list, tuple)) else [cb]


def find_migrating(vm: str, hosts: list[Host]) -> tuple[Host, Any] | None:
    """The host where ``vm`` runs a migration job right now, and its domain."""
    import libvirt

    for host in hosts:
        try:
            dom = host.domain(vm)
        except (HostUnreachable, HostUnresponsive):
            continue
        if dom is None:
            continue
        try:
            stats = host.call("reading the job", dom.jobStats, 0)
            state = host.call("reading the VM state", dom.state)[0]
        except libvirt.libvirtError:
            continue
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            continue
        # The destination's incoming copy has a job too; the source is the one sending.
        operation = stats.get("operation")
        if operation == libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT or \
                (operation is None and state == libvirt.VIR_DOMAIN_RUNNING):
            return host, dom
    return None
