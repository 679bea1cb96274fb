"""One way to run a migration, whatever runs it: the Backend protocol and its implementations.

    Backend            the protocol: ``name``, ``kinds``, ``precheck(spec) -> PrecheckReport``,
                       ``run(spec, on_point=None, on_event=None, abort=None) -> MigrationResult``
    PrecheckReport     one report for every backend: the checks (Check: name, ok, message,
                       hint), ``ok``, ``lines()``, ``raise_if_failed()``, and ``details`` (what a
                       backend found: libvirt flags, block migration, bytes to move …)
    AbortFlag          what ``abort`` must offer: ``is_set()`` (a threading.Event does)
    SimulatorBackend   "sim": the simulator, on ``spec.to_plan()``
    LiveBackend        "live": LiveMigration over libvirt (labmig.live.migration), on
                       ``LivePlan.from_spec(spec)``
    ColdBackend        "cold": ColdMigration over libvirt + ssh (labmig.cold.migration), on
                       ``ColdPlan.from_spec(spec)``
    BACKENDS           name -> backend class; ``get_backend(name)``, ``backend_for(spec)``
    libvirt_mapping(spec)   the VIR_MIGRATE_* flags and parameters of a live spec, by name,
                       without libvirt (the pre-check reports list them)
    live_spec(vm, source, destination, options)   the spec of a LiveOptions (the
                       ``migrate live`` flags): strategy, cap, policy, the rest as run options
                       (LiveOptions.to_spec)

The contract: ``run`` returns a MigrationResult whatever happens to the migration —
completed, did not converge, aborted, rolled back, failed — with its outcome and a
message saying where the VM is. It raises only before anything changed: bad input
(:class:`InvalidInput`) or a failed pre-check (:class:`PrecheckFailed`; VMBusy, another
labmig process holding the VM's lock, is one: see labmig.vmlock). Ctrl-C still
interrupts, after the rollback.

On the local lab, a real run whose spec states a link rate (``spec.link_given``) shapes
the lab's inter-host link to it for that run, says so in an event, and puts the
previous rate back afterwards; on other hosts the link rate is only declared (it is
what the simulator's prediction uses). ``spec.max_bandwidth`` reaches libvirt as
VIR_MIGRATE_PARAM_BANDWIDTH, as it reaches the simulator's engine.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

from .errors import InvalidInput, MigrationFailed, PrecheckFailed
from .live.prechecks import Check
from .model import Event, MigrationResult, Outcome, TimelinePoint
from .spec import MigrationSpec
from .units import format_rate

log = logging.getLogger(__name__)

PointCallback = Callable[[TimelinePoint], None]
EventCallback = Callable[[Event], None]

__all__ = ["Backend", "PrecheckReport", "Check", "AbortFlag", "SimulatorBackend", "LiveBackend",
           "ColdBackend", "BACKENDS", "get_backend", "backend_for", "live_spec",
           "libvirt_mapping"]


class AbortFlag(Protocol):
    """Set by the caller (another thread, a widget) to stop a run; a threading.Event is one."""

    def is_set(self) -> bool: ...


@dataclass
class PrecheckReport:
    """The verdicts of a backend's pre-checks, the same type for every backend."""

    backend: str
    spec: MigrationSpec
    checks: list[Check] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    @property
    def ok(self) -> bool:
        return not self.failed

    def add(self, name: str, ok: bool | None, message: str, hint: str | None = None) -> Check:
        check = Check(name, ok, message, hint)
        self.checks.append(check)
        return check

    def lines(self) -> list[str]:
        return [c.line() for c in self.checks]

    def raise_if_failed(self) -> None:
        if self.ok:
            return
        first = self.failed[0]
        lines = "\n".join("  " + line for line in self.lines())
        raise PrecheckFailed(f"cannot {self.spec.kind}-migrate {self.spec.vm.name}: {first.message}\n{lines}",
                             first.hint)

    def to_list(self) -> list[dict[str, Any]]:
        return [{"name": c.name, "ok": c.ok, "message": c.message, "hint": c.hint} for c in self.checks]


@runtime_checkable
class Backend(Protocol):
    """What runs a MigrationSpec. See the module docstring for the contract."""

    name: str
    kinds: tuple[str, ...]

    def precheck(self, spec: MigrationSpec) -> PrecheckReport: ...

    def run(self, spec: MigrationSpec, on_point: PointCallback | None = None,
            on_event: EventCallback | None = None, abort: AbortFlag | None = None) -> MigrationResult: ...


def _check_kind(backend: Any, spec: MigrationSpec) -> None:
    if spec.kind not in backend.kinds:
        raise InvalidInput(f"the {backend.name} backend runs {' and '.join(backend.kinds)} migrations, "
                           f"not {spec.kind} ({spec.strategy})", "pick the backend of that kind")


def _not_started(spec: MigrationSpec, backend: str, reason: str) -> MigrationResult:
    return MigrationResult(kind=spec.kind, strategy=spec.strategy, backend=backend, outcome=Outcome.ABORTED,
                           total_time=0.0, downtime=0.0, vm=spec.vm.name, source=spec.source,
                           destination=spec.destination, message=f"{reason}: not started; the VM did not move",
                           plan=spec.to_dict())


# -- the simulator -----------------------------------------------------------------
class SimulatorBackend:
    """The simulator: every kind, any scale, deterministic for the spec's seed."""

    name = "sim"
    kinds = ("live", "cold")

    def precheck(self, spec: MigrationSpec) -> PrecheckReport:
        from .strategies import make_strategy

        report = PrecheckReport(self.name, spec)
        plan = spec.to_plan().validated()
        make_strategy(spec.strategy, plan.options)
        report.add("spec", True, f"{spec.kind} migration of {spec.vm.name} with {spec.strategy}")
        cap = f"; stream capped at {format_rate(spec.max_bandwidth)}" if spec.max_bandwidth else ""
        report.add("link", True, f"link rate {format_rate(spec.link.link_rate)}{cap}")
        report.details.update(_strategy_details(spec))
        _libvirt_check(report)
        return report

    def run(self, spec: MigrationSpec, on_point: PointCallback | None = None,
            on_event: EventCallback | None = None, abort: AbortFlag | None = None) -> MigrationResult:
        from .sim.run import simulate

        _check_kind(self, spec)
        if abort is not None and abort.is_set():
            return _not_started(spec, self.name, "aborted before the start")
        result = simulate(spec.to_plan())
        if on_point is not None:
            for point in result.timeline:
                on_point(point)
        if on_event is not None:
            for event in result.events:
                on_event(event)
        if spec.source or spec.destination:
            result.source, result.destination = spec.source or result.source, spec.destination or result.destination
        return result


class _FlagNames(frozenset[str]):
    """A set of VIR_MIGRATE_* flag names that combines with ``|`` as the flags' bits do."""

    def __or__(self, other: Any) -> "_FlagNames":
        return _FlagNames(frozenset.__or__(self, other))

    __ror__ = __or__


class _LibvirtNames:
    """Stands in for the libvirt module: every VIR_* constant is its own name."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("VIR_MIGRATE_PARAM_"):
            return name
        if name.startswith("VIR_MIGRATE_"):
            return _FlagNames({name})
        raise AttributeError(name)


def libvirt_mapping(spec: MigrationSpec) -> tuple[list[str], dict[str, Any]]:
    """The VIR_MIGRATE_* flags and typed parameters a live spec becomes, by name, without libvirt.

    Read off LivePlan.flags/params, which the live run hands to virDomainMigrateToURI3; the
    strategy's part comes from its ``to_libvirt``. Block migration counts as asked in the
    run options (the pre-checks decide it on real hosts).
    """
    from .live.plan import LivePlan

    plan = LivePlan.from_spec(spec if spec.destination else replace(spec, destination="(destination)"))
    names = _LibvirtNames()
    flags: Any = plan.flags(names, bool(spec.run_options.get("block_migration")))   # _FlagNames, not an int
    return sorted(flags), plan.params(names)


def _strategy_details(spec: MigrationSpec) -> dict[str, Any]:
    """What the spec becomes on libvirt (live specs), for a pre-check report."""
    if spec.kind != "live":
        return {}
    flags, params = libvirt_mapping(spec)
    return {"libvirt_flags": flags, "libvirt_params": params}


def _libvirt_check(report: PrecheckReport) -> None:
    if "libvirt_flags" in report.details:
        params = ", ".join(f"{k}={v}" for k, v in report.details["libvirt_params"].items())
        report.add("libvirt", True, f"{report.spec.strategy}: " + " | ".join(report.details["libvirt_flags"])
                   + (f"; {params}" if params else ""))


# -- live, over libvirt ---------------------------------------------------------------
def live_spec(vm: str, source: str, destination: str, options: Any = None, strategy: str | None = None,
              link_rate: Any = None) -> MigrationSpec:
    """The live spec of LiveOptions ``options`` (labmig.live.plan), e.g. from ``migrate live``'s flags.

    Without ``strategy`` it is what the options amount to and every option is passed on
    as it is; with one, only the options that differ from LiveOptions' defaults are.
    ``link_rate`` (when given) is stated: the local lab's link is shaped to it.
    """
    from .live.plan import LiveOptions

    options = options if options is not None else LiveOptions()
    spec: MigrationSpec = options.to_spec(vm, source, destination, strategy, changed_only=strategy is not None)
    return spec if link_rate is None else spec.with_param("link-rate", link_rate)


@contextlib.contextmanager
def _lab_link(spec: MigrationSpec, source: Any, destination: Any,
              note: Callable[[str, str], None]) -> Iterator[bool]:
    """Shape the local lab's link to the spec's link rate for the run, then put it back.

    Yields whether it shaped the link; ``note(kind, message)`` records each change in the run.
    """
    lab = _local_lab_of(source, destination) if spec.link_given else None
    if lab is None:
        yield False
        return
    before = lab.link_rate
    lab.shape_link(spec.link.link_rate)
    note("link-rate", f"lab link shaped to {format_rate(spec.link.link_rate)} for this run")
    try:
        yield True
    finally:
        lab.shape_link(before)
        note("link-rate", "lab link back to " + ("unlimited" if before is None else format_rate(before)))


def _local_lab_of(source: Any, destination: Any) -> Any:
    """The LocalLab both hosts belong to, or None (real hosts: the link rate is only declared)."""
    from .hosts import lab_hosts

    uris = {h.uri for h in lab_hosts()}
    if not uris or source.uri not in uris or destination.uri not in uris:
        return None
    from .lab import LocalLab

    return LocalLab()


def _abort_watcher(abort: AbortFlag | None, stop: Callable[[str], None]) -> Callable[[], None]:
    """A thread calling ``stop`` once ``abort`` is set; returns the function that ends it."""
    if abort is None:
        return lambda: None
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            if abort.is_set():
                stop("aborted by the caller")
                return

    thread = threading.Thread(target=watch, name="abort-watch", daemon=True)
    thread.start()
    return done.set


class LiveBackend:
    """Live migration over libvirt, as Nova's libvirt driver does it (labmig.live.migration)."""

    name = "live"
    kinds = ("live",)

    def precheck(self, spec: MigrationSpec) -> PrecheckReport:
        from .hosts import resolve_host
        from .live.plan import LivePlan
        from .live.prechecks import run_prechecks

        _check_kind(self, spec)
        plan = LivePlan.from_spec(spec)
        source, destination = resolve_host(plan.source), resolve_host(plan.destination)
        try:
            found = run_prechecks(plan, source, destination)
        finally:
            source.close()
            destination.close()
        report = PrecheckReport(self.name, spec)
        report.details.update(_strategy_details(spec), block_migration=found.block_migration,
                              data_bytes=found.data_bytes)
        _libvirt_check(report)
        report.checks.extend(found.checks)
        return report

    def run(self, spec: MigrationSpec, on_point: PointCallback | None = None,
            on_event: EventCallback | None = None, abort: AbortFlag | None = None) -> MigrationResult:
        from .hosts import resolve_host
        from .live.migration import LiveMigration
        from .live.plan import LivePlan
        from .live.probe import probe_for

        _check_kind(self, spec)
        plan = LivePlan.from_spec(spec)
        if abort is not None and abort.is_set():
            return _not_started(spec, "libvirt", "aborted before the start")
        source, destination = resolve_host(plan.source), resolve_host(plan.destination)
        with LiveMigration(plan, source, destination, on_point=on_point, on_event=on_event,
                           probe=probe_for(spec.vm.name)) as mig:
            with _lab_link(spec, source, destination, mig.note) as shaped:
                stop = _abort_watcher(abort, mig.abort)
                try:
                    result = mig.run()
                finally:
                    stop()
            result.extra.update(link_rate=spec.link.link_rate, link_shaped=shaped)
            _observe_placement(result, source, destination)
        return result


# -- cold, over libvirt + ssh ---------------------------------------------------------
class ColdBackend:
    """Cold migration over libvirt + ssh (labmig.cold.migration): a failure is a result, too.

    ``progress`` shows the disk copy's progress line on the terminal (the command line's).
    """

    name = "cold"
    kinds = ("cold",)

    def __init__(self, progress: bool = False) -> None:
        self.progress = progress

    def precheck(self, spec: MigrationSpec) -> PrecheckReport:
        from .cold.migration import ColdMigration, ColdPlan

        _check_kind(self, spec)
        report = PrecheckReport(self.name, spec)
        with ColdMigration(ColdPlan.from_spec(spec)) as mig:
            try:
                for line in mig.precheck():
                    report.add("cold", True, line)
            except PrecheckFailed as exc:
                report.add("cold", False, exc.message, exc.hint)
        return report

    def run(self, spec: MigrationSpec, on_point: PointCallback | None = None,
            on_event: EventCallback | None = None, abort: AbortFlag | None = None) -> MigrationResult:
        from .cold.migration import ColdMigration, ColdPlan
        from .live.probe import probe_for
        from .vmlock import vm_lock

        _check_kind(self, spec)
        plan = ColdPlan.from_spec(spec)
        if abort is not None and abort.is_set():
            return _not_started(spec, "libvirt", "aborted before the start")
        # The VM's lock before the lab's link is shaped for the run (mig.run() takes it again).
        with vm_lock(plan.vm), ColdMigration(plan, on_point=on_point, on_event=on_event,
                                             probe=probe_for(spec.vm.name), progress=self.progress) as mig:
            with _lab_link(spec, mig.src.host, mig.dst.host, mig.note) as shaped:
                try:
                    result = mig.run()
                except MigrationFailed as exc:   # after a change: rolled back (or not), a result
                    result = _cold_failure(spec, mig, exc)
            result.extra.update(link_rate=spec.link.link_rate, link_shaped=shaped)
            _observe_placement(result, mig.src.host, mig.dst.host)
        return result


def _observe_placement(result: MigrationResult, source: Any, destination: Any) -> None:
    """Ask both hosts where the VM is now and keep it in ``result.extra["placement"]``.

    A run that leaves the VM active on two hosts, or on none and defined nowhere, says
    so in its message too, whatever its outcome claims.
    """
    from .placement import observe

    placement = observe(result.vm, [source, destination])
    result.extra["placement"] = found = placement.to_dict()
    if found["problem"]:
        log.warning("after the run: %s: %s", found["problem"], found["words"])
        result.message = f"{result.message}; CHECK THE HOSTS: {found['words']}".lstrip("; ")


def _cold_failure(spec: MigrationSpec, mig: Any, exc: MigrationFailed) -> MigrationResult:
    result = MigrationResult(
        kind="cold", strategy=spec.strategy, backend="libvirt",
        outcome=Outcome.ROLLED_BACK if exc.rolled_back else Outcome.FAILED, total_time=0.0, downtime=0.0,
        vm=spec.vm.name, source=spec.source, destination=spec.destination, message=exc.message,
        timeline=list(mig.timeline), events=list(mig.events), plan=spec.to_dict())
    result.total_time = result.timeline[-1].t if result.timeline else 0.0
    result.extra["rolled_back"] = exc.rolled_back
    if exc.hint:
        result.extra["hint"] = exc.hint
    return result


# -- the registry ---------------------------------------------------------------------
BACKENDS: dict[str, type] = {cls.name: cls for cls in (SimulatorBackend, LiveBackend, ColdBackend)}


def get_backend(name: str) -> Backend:
    try:
        backend: Backend = BACKENDS[name]()
    except KeyError:
        raise InvalidInput(f"unknown backend {name!r}", f"choose one of: {', '.join(BACKENDS)}") from None
    return backend


def backend_for(spec: MigrationSpec, simulate: bool = False) -> Backend:
    """The simulator when ``simulate``, else the real backend of the spec's kind."""
    return get_backend("sim" if simulate else spec.kind)
