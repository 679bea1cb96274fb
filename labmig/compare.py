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
                      not have kept
    compare_simulated()  the same table from the simulator, for a plan of the same shape
                      (used when no lab can come up, and said so)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

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


def compare_on_hosts(vm: str, source: str, destination: str, live_options: Any = None,
                     cold_options: Any = None, on_event: Any = None) -> Comparison:
    """Live-migrate ``vm`` source → destination, then cold-migrate it back (confirmed)."""
    from .cold.migration import ColdMigration, ColdOptions, ColdPlan
    from .live.migration import LiveMigration
    from .live.plan import LiveOptions, LivePlan
    from .live.probe import probe_for

    live_plan = LivePlan(vm, source, destination, live_options or LiveOptions())
    with LiveMigration(live_plan, probe=probe_for(vm), on_event=on_event) as mig:
        live = mig.run()
    log.info("live: %s", live.message)
    if live.bytes_by_phase.get("disk"):
        _remove_stale_disks(vm, source, destination)
    opts = cold_options or ColdOptions()
    opts = replace(opts, auto_confirm=True, delete_source_disks=True)
    with ColdMigration(ColdPlan(vm, destination, source, opts), probe=probe_for(vm),
                       on_event=on_event) as mig:
        cold = mig.run()
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


def compare_simulated(memory: int = 128 << 20, disk_size: int = 16 << 20, bandwidth: float = 1e9 / 8,
                      dirty_rate: float = 0.0, note: str = "") -> Comparison:
    """Both strategies in the simulator, local disks, on the same modelled link."""
    from .plan import VM, Link, Plan, Storage, Workload
    from .sim.run import simulate

    plan = Plan(vm=VM(name="guest1", memory=memory, disk_size=disk_size), link=Link(link_rate=bandwidth),
                workload=Workload(kind="uniform" if dirty_rate else "idle", dirty_rate=dirty_rate),
                storage=Storage(shared=False))
    live = simulate(replace(plan, strategy="precopy"))
    cold = simulate(replace(plan, strategy="cold"))
    for r, src, dst in ((live, "host1", "host2"), (cold, "host2", "host1")):
        r.source, r.destination = src, dst
    return Comparison(live, cold, "sim", note)
