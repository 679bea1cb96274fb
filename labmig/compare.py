"""Live vs cold, measured: one guest, the same link, both migrations, one table.

    Comparison        the two MigrationResults plus where they came from; ``rows()`` is
                      the comparison table (:func:`labmig.report.live_vs_cold_rows`: VM
                      state, downtime, client-seen interruption, total time, bytes on the
                      wire, network and storage needs, what a failure leaves),
                      ``render()`` prints it, ``to_dict()``
    compare_on_hosts()  a live migration source → destination, then a cold migration
                      back (confirmed, the destination's copy removed): the VM ends
                      where it started, both runs on the same link. After a block
                      migration the source's stale disk copies are removed first, as
                      Nova's post-live-migration clean-up does, so the cold run copies
                      the whole disk rather than a delta against a copy Nova would
                      not have kept. A live leg that does not complete (failed,
                      rolled back, aborted, did not converge) ends the comparison:
                      LiveLegFailed says what happened and where the VM is, and no
                      cold leg starts
    LiveLegFailed     that stop: a MigrationFailed carrying the live result
    compare_simulated()  the same table from the simulator, for a spec of the same shape
                      (used when no lab can come up, and said so); it takes the same
                      link rate and max bandwidth as the real comparison

Both legs run through labmig.backends (the live and cold backends, or the simulator).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from .errors import MigrationFailed
from .model import MigrationResult
from .report import live_vs_cold_rows, text_table
from .units import format_duration

log = logging.getLogger(__name__)


def _dur(value: float | None) -> str:
    return "-" if value is None else format_duration(value)


@dataclass
class Comparison:
    live: MigrationResult
    cold: MigrationResult
    backend: str                # "libvirt" (the lab or real hosts) or "sim"
    note: str = ""              # e.g. why the simulator was used

    @property
    def downtime_ratio(self) -> float | None:
        """Live downtime as a fraction of cold downtime."""
        if not self.cold.downtime:
            return None
        return self.live.downtime / self.cold.downtime

    def rows(self) -> list[tuple[str, str, str]]:
        return live_vs_cold_rows(self.live, self.cold)

    def render(self) -> str:
        lines = [text_table(self.rows(), header=("", "live", "cold"))]
        ratio = self.downtime_ratio
        where = "Measured on real QEMU/libvirt" if self.backend == "libvirt" else "Modelled by the simulator"
        tail = [f"\n{where}: {self.live.vm or 'the VM'} {self.live.source} → {self.live.destination} live, "
                f"then {self.cold.source} → {self.cold.destination} cold."]
        if ratio is not None:
            tail.append(f"Live downtime is {ratio * 100:.1f} % of cold downtime "
                        f"({_dur(self.live.downtime)} vs {_dur(self.cold.downtime)}).")
        if self.note:
            tail.append(self.note)
        return "\n".join(lines + tail)

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "note": self.note, "downtime_ratio": self.downtime_ratio,
                "table": [{"aspect": a, "live": b, "cold": c} for a, b, c in self.rows()],
                "live": self.live.to_dict(), "cold": self.cold.to_dict()}


class LiveLegFailed(MigrationFailed):
    """The live leg of a comparison did not complete; ``live`` is its result. No cold leg ran."""

    def __init__(self, live: MigrationResult) -> None:
        rolled_back = bool(live.extra.get("rolled_back"))
        if rolled_back:
            where = f"{live.vm} runs on {live.source} again (rolled back, destination cleared)"
        elif str(live.outcome) == "failed":
            where = f"{live.vm} may be on either host: `labmig status` shows where"
        else:
            where = f"{live.vm} stays on {live.source}"
        super().__init__(f"the live migration of {live.vm} {live.source} → {live.destination} ended "
                         f"{live.outcome}: {live.message}. {where}; no cold migration was started",
                         "see `labmig status`; fix the cause and run labmig compare again",
                         rolled_back=rolled_back)
        self.live = live


def compare_on_hosts(vm: str, source: str, destination: str, live_options: Any = None,
                     cold_options: Any = None, on_event: Any = None, *, link_rate: Any = None,
                     backends: Mapping[str, Any] | None = None) -> Comparison:
    """Live-migrate ``vm`` source → destination, then cold-migrate it back (confirmed).

    ``live_options`` is a LiveOptions (``max_bandwidth`` caps the stream), ``cold_options``
    a ColdRunOptions; ``link_rate`` shapes the local lab's link for both legs. Raises
    LiveLegFailed, before any cold leg, when the live one does not complete. Holds the VM's
    lock (labmig.vmlock) from the first leg to the end of the second, so no other labmig
    process acts on the VM in between; each leg takes it again (re-entrant).
    """
    from .vmlock import vm_lock

    with vm_lock(vm):
        return _both_legs(vm, source, destination, live_options, cold_options, on_event, link_rate, backends)


def _both_legs(vm: str, source: str, destination: str, live_options: Any, cold_options: Any,
               on_event: Any, link_rate: Any, backends: Mapping[str, Any] | None) -> Comparison:
    from .backends import ColdBackend, LiveBackend, live_spec
    from .cold.migration import ColdRunOptions
    from .spec import VM, MigrationSpec

    runners = {"live": LiveBackend(), "cold": ColdBackend(), **(backends or {})}
    live_leg = live_spec(vm, source, destination, live_options, link_rate=link_rate)
    live = runners["live"].run(live_leg, on_event=on_event)
    log.info("live: %s", live.message)
    if not live.completed:
        raise LiveLegFailed(live)
    if live.bytes_by_phase.get("disk"):
        _remove_stale_disks(vm, source, destination)
    opts = replace(cold_options or ColdRunOptions(), auto_confirm=True, delete_source_disks=True)
    cold_leg = MigrationSpec(vm=VM(name=vm), strategy="cold", source=destination, destination=source,
                             link=live_leg.link, link_given=live_leg.link_given,
                             run_options={f.name: getattr(opts, f.name) for f in fields(opts)})
    cold = runners["cold"].run(cold_leg, on_event=on_event)
    log.info("cold: %s", cold.message)
    return Comparison(live, cold, "libvirt")


def _remove_stale_disks(vm: str, source: str, destination: str) -> None:
    from .cold.domxml import read_disks
    from .cold.hostops import HostOps, agent_for
    from .cold.sides import cold_host

    src, dst = cold_host(source), cold_host(destination)
    dom = HostOps(dst.host).lookup(vm)
    if dom is None:
        return
    stale = [d.path for d in read_disks(HostOps(dst.host).xml(dom)) if src.classify(d.path) == "local"]
    if stale:
        with agent_for(src) as agent:
            for path in stale:
                agent.call("remove", path=path)
                log.info("removed the stale copy of %s on %s", path, source)


def compare_simulated(memory: int = 128 << 20, disk_size: int = 16 << 20, link_rate: float = 1e9 / 8,
                      dirty_rate: float = 0.0, note: str = "", max_bandwidth: float = 0.0) -> Comparison:
    """Both strategies in the simulator, local disks, on the same modelled link and cap."""
    from .backends import SimulatorBackend
    from .spec import VM, MigrationSpec, Storage, Workload

    live_leg = MigrationSpec(vm=VM(name="guest1", memory=memory, disk_size=disk_size),
                             workload=Workload(kind="uniform" if dirty_rate else "idle", dirty_rate=dirty_rate),
                             storage=Storage(shared=False), max_bandwidth=max_bandwidth,
                             source="host1", destination="host2").with_param("link-rate", link_rate)
    sim = SimulatorBackend()
    live = sim.run(live_leg)
    cold = sim.run(replace(live_leg, strategy="cold", options=None, kind="", source="host2", destination="host1"))
    return Comparison(live, cold, "sim", note)
